"""Simulation speed of the generated core: a markdown table per simulator.

The shipped JapaneseVowels GRU (12 -> 32, 9-way head) at 8 lanes, sequences of 29 steps taken from
the test set (shorter ones run on into their zero padding). Wall seconds include generating the
Verilog and building the simulator in a fresh folder; Verilator's compiled runtime (the same for
every design) comes from the per-user cache unless ``--cold``. Icarus runs this core at a few
thousand cycles per second, so it gets fewer sequences (``--icarus-sequences``); cycles per second
is the figure to compare. The issue's requirement: 100 sequences under Verilator in <= 60 s.
Prints a markdown table, then short notes.

    python bench/simspeed.py [--sequences 100] [--icarus-sequences 4] [--cold] [--amaranth]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gru_hw.golden import int_forward_q, quantize_inputs  # noqa: E402
from gru_hw.importers import load_model  # noqa: E402
from gru_hw.quant import choose_spec, quantize_model  # noqa: E402
from gru_hw.simulate import generate_cached, stall_cycles  # noqa: E402

LANES, STEPS = 8, 29


def _inputs(spec, n: int):
    data = np.load(ROOT / "gru_hw" / "data" / "japanese_vowels_test.npz")
    x = data["x"][np.arange(n) % len(data["x"]), :STEPS]
    lengths = np.full(n, STEPS, dtype=np.int64)
    return quantize_inputs(spec, x)[0], lengths


def run_rtl(simulator: str, qm, n: int, root: Path) -> dict:
    """Generate, build and run n sequences; return the timings."""
    from gru_hw.sim.job import Options, PortLayout, make_job
    from gru_hw.sim.runner import build, run_built

    xq, lengths = _inputs(qm.spec, n)
    golden = int_forward_q(qm, xq, lengths)
    t0 = time.perf_counter()
    verilog, info = generate_cached(qm, root, lanes=LANES)
    t1 = time.perf_counter()
    build_dir = build(verilog, simulator, root)
    t2 = time.perf_counter()
    job = make_job(PortLayout.from_ports(info["ports"]), xq, lengths, y=golden.y,
                   options=Options(stall_cycles=stall_cycles(info)))
    test_dir = root / f"run-{simulator}"
    job.save(test_dir)
    res = run_built(build_dir, simulator, test_dir)
    t3 = time.perf_counter()
    return {"simulator": simulator, "sequences": n, "cycles": res["sim_cycles"],
            "generate_s": t1 - t0, "build_s": t2 - t1, "sim_s": t3 - t2, "total_s": t3 - t0,
            "match": res["match"], "mismatch": res["mismatch"]}


def run_amaranth(qm, n: int) -> dict:
    """Run n sequences in Amaranth's simulator (no Verilog, no build)."""
    from gru_hw.amaranth_sim import simulate

    xq, lengths = _inputs(qm.spec, n)
    golden = int_forward_q(qm, xq, lengths)
    t0 = time.perf_counter()
    y, _, cycles = simulate(qm, xq, lengths, lanes=LANES)
    t1 = time.perf_counter()
    return {"simulator": "amaranth", "sequences": n, "cycles": int(np.sum(cycles)),
            "generate_s": 0.0, "build_s": 0.0, "sim_s": t1 - t0, "total_s": t1 - t0,
            "match": bool(np.array_equal(y, golden.y)), "mismatch": None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=100, help="Verilator sequences (100)")
    p.add_argument("--icarus-sequences", type=int, default=4, help="Icarus sequences (4)")
    p.add_argument("--amaranth", type=int, default=0, metavar="N",
                   help="also run N sequences in Amaranth's simulator")
    p.add_argument("--cold", action="store_true",
                   help="compile Verilator's runtime too (empty per-user cache)")
    args = p.parse_args(argv)
    from gru_hw.sim.runner import ToolMissing, check_tool

    model = load_model(ROOT / "gru_hw" / "data" / "japanese_vowels_gru.pt")
    qm = quantize_model(model, choose_spec(model))
    rows = []
    with tempfile.TemporaryDirectory(prefix="gru-hw-simspeed-") as tmp:
        if args.cold:
            os.environ["GRU_HW_CACHE"] = str(Path(tmp) / "cache")
        for simulator, n in (("verilator", args.sequences), ("icarus", args.icarus_sequences)):
            if n <= 0:
                continue
            try:
                check_tool(simulator)
            except ToolMissing as exc:
                print(f"skipping {simulator}: {exc}", file=sys.stderr)
                continue
            # A fresh folder per simulator: the Verilog is generated (and timed) for each.
            rows.append(run_rtl(simulator, qm, n, Path(tmp) / simulator))
        if args.amaranth > 0:
            rows.append(run_amaranth(qm, args.amaranth))
    print("| simulator | sequences | simulated cycles | generate s | build s | simulate s "
          "| total wall s | cycles/s (simulate) | bit-exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['simulator']} | {r['sequences']} | {r['cycles']:,} | {r['generate_s']:.1f} | "
              f"{r['build_s']:.1f} | {r['sim_s']:.1f} | {r['total_s']:.1f} | "
              f"{r['cycles'] / r['sim_s']:,.0f} | {'yes' if r['match'] else 'NO'} |")
    failed = [r for r in rows if not r["match"]]
    for r in failed:
        print(f"\n{r['simulator']}: {r['mismatch']}", file=sys.stderr)
    print(f"\nJapaneseVowels GRU 12 -> 32 + 9-way head at 16/16 bits, {LANES} lanes, {STEPS} steps "
          "per sequence (test-set inputs), on "
          f"{os.cpu_count()} CPU(s); Verilator's compiled runtime "
          f"{'built in this run (--cold)' if args.cold else 'from the per-user cache'}. Wall "
          "seconds: they depend on what else the machine is running.")
    verilator = [r for r in rows if r["simulator"] == "verilator"]
    if verilator and verilator[0]["sequences"] >= 100:
        ok = verilator[0]["total_s"] <= 60
        print(f"\nVerilator, {verilator[0]['sequences']} sequences including generate and build: "
              f"{verilator[0]['total_s']:.1f} s ({'within' if ok else 'OVER'} the 60 s budget)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
