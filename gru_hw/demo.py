"""``gru-hw demo``: the main job, end to end, on the shipped JapaneseVowels classifier.

import -> formats and accuracy cost -> Verilog -> RTL simulation (Verilator) exact against golden
-> iCEBreaker bitstreams and reports -> summary table and a PNG figure. Everything lands in one
output folder; nothing is downloaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import GruHwError

DATA = Path(__file__).resolve().parent / "data"
MODEL_FILE = DATA / "japanese_vowels_gru.pt"
LANES = 8
SIM_SEQUENCES = 60
SWEEP_BITS = [(16, 16), (12, 12), (10, 10), (8, 10), (8, 8), (6, 8), (4, 8)]
BOARD_LANES = (4, 8)
#: The iCEBreaker's UP5K holds the example at 8 lanes with 8-bit weights and activations (the test
#: accuracy is unchanged, see the sweep); a clock below the routed Fmax avoids a second build.
BOARD_BITS = (8, 8)
BOARD_CLOCK_MHZ = 24.0


class _Progress:
    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total = total
        self.n = 0
        self.t0 = time.monotonic()
        self.log = log

    def stage(self, text: str) -> float:
        self.n += 1
        self.log(f"[{self.n}/{self.total}] {text} ...")
        return time.monotonic()

    def done(self, t: float, text: str) -> None:
        self.log(f"      {text} ({time.monotonic() - t:.1f} s)")


def _split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.load(DATA / f"japanese_vowels_{name}.npz")
    return d["x"].astype(np.float64), d["lengths"].astype(np.int64), d["labels"]


def run_demo(out_dir: str | Path, *, quick: bool = False,
             log: Callable[[str], None] | None = None) -> int:
    """Run the demo; return the exit status (1 if a check failed).

    ``log`` receives the progress and summary lines (default: none are shown).
    """
    log = log or (lambda _line: None)
    from .golden import float_forward, int_forward
    from .importers import load_model
    from .quant import choose_spec, quantize_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = 5 if quick else 6
    prog = _Progress(steps, log)
    summary: dict = {"model_file": str(MODEL_FILE.relative_to(DATA.parent.parent))}

    # 1. import
    t = prog.stage(f"importing {MODEL_FILE.name}")
    model = load_model(MODEL_FILE)
    x, lengths, labels = _split("test")
    xtr, ltr, _ = _split("train")
    cal = xtr[np.arange(xtr.shape[1])[None, :] < ltr[:, None]]
    summary["model"] = model.describe()
    prog.done(t, f"{model.describe()}; test split {x.shape[0]} sequences of 7..{x.shape[1]} steps")

    # 2. formats and accuracy
    t = prog.stage("choosing fixed-point formats (calibrated on the train split), accuracy vs float")
    f = float_forward(model, x, lengths, sequence=True)
    acc_float = float(np.mean(f.y.argmax(1) == labels))
    spec = choose_spec(model, calibration=cal)
    spec.save(out / "qconfig.json")
    qm = quantize_model(model, spec)
    sweep = []
    for wb, ab in SWEEP_BITS:
        qmb = quantize_model(model, choose_spec(model, wb, ab, calibration=cal))
        r = int_forward(qmb, x, lengths, sequence=True)
        sweep.append({"weight_bits": wb, "act_bits": ab,
                      "accuracy": float(np.mean(r.y.argmax(1) == labels)),
                      "max_h_err": float(np.abs(r.h - f.h).max())})
    default = sweep[0]
    summary.update(float_accuracy=acc_float, fixed_accuracy=default["accuracy"],
                   max_h_err_16bit=default["max_h_err"], bit_sweep=sweep,
                   sigmoid_max_err=spec.sigmoid_table().max_error,
                   tanh_max_err=spec.tanh_table().max_error)
    prog.done(t, f"float {100 * acc_float:.2f}%, fixed (16/16 bit) {100 * default['accuracy']:.2f}%, "
                 f"max |h - h_float| {default['max_h_err']:.4f}; PWL max error sigmoid "
                 f"{spec.sigmoid_table().max_error:.5f}, tanh {spec.tanh_table().max_error:.5f}")

    # 3. Verilog
    t = prog.stage(f"generating Verilog ({LANES} lanes)")
    from .generate import generate

    gen = generate(qm, out / "verilog", lanes=LANES)
    cps = gen["schedule"]["cycles_per_step"]
    summary["cycles_per_step"] = cps
    summary["ideal_cycles_per_step"] = gen["schedule"].get("ideal_cycles_per_step")
    prog.done(t, f"{out / 'verilog' / 'gru_core.v'}: {cps} cycles/step "
                 f"(ideal {summary['ideal_cycles_per_step']})")

    # 4. RTL simulation
    t = prog.stage(f"simulating the Verilog with Verilator on {SIM_SEQUENCES} test sequences")
    from .simulate import run_simulation

    sim_in = out / "sim_inputs.npz"
    np.savez(sim_in, x=x[:SIM_SEQUENCES], lengths=lengths[:SIM_SEQUENCES])
    sim = run_simulation(model, spec, sim_in, out / "sim_outputs.npz", simulator="verilator",
                         lanes=LANES, build_dir=str(out / "sim_build"))
    summary["rtl_sim"] = {"sequences": sim["sequences"], "match": sim["match"],
                          "cycles_mean": sim["cycles_mean"]}
    if not sim["match"]:
        log(f"      MISMATCH: {sim['mismatch']}")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return 1
    prog.done(t, f"all {sim['sequences']} outputs bit-exact against golden; "
                 f"{sim['cycles_mean']:.0f} cycles/sequence on average")

    # 5. boards
    builds = []
    if not quick:
        wb, ab = BOARD_BITS
        t = prog.stage(f"building iCEBreaker bitstreams, {wb}-bit weights and activations, lanes "
                       f"{', '.join(map(str, BOARD_LANES))} (two at a time)")
        board_spec = choose_spec(model, wb, ab, calibration=cal)
        board_spec.save(out / "qconfig-icebreaker.json")
        builds = _board_builds(quantize_model(model, board_spec), out, log)
        summary["board_bits"] = {"weight_bits": wb, "act_bits": ab}
        summary["icebreaker"] = builds
        ok = [b for b in builds if "fmax_mhz" in b]
        prog.done(t, f"{len(ok)} of {len(builds)} bitstream(s) built in {out}")
        if not any(b["lanes"] == LANES and "fmax_mhz" in b for b in builds):
            log(f"      the {LANES}-lane iCEBreaker build did not complete")
            (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
            return 1

    # 6. summary and figure
    t = prog.stage("summary and figure")
    from .demo_figure import draw

    draw(out / "demo.png", spec, sweep, acc_float, builds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    log("")
    log(_summary_table(summary, builds))
    prog.done(t, f"{out / 'demo.png'}, {out / 'summary.json'}")
    log(f"\ndone in {time.monotonic() - prog.t0:.0f} s")
    return 0


def _board_builds(qm, out: Path, log: Callable[[str], None]) -> list[dict]:
    """Build the iCEBreaker bitstreams, two at a time (each build is one single-threaded tool chain)."""
    from concurrent.futures import ThreadPoolExecutor

    from .board import build

    def one(lanes: int) -> dict:
        def say(msg: str) -> None:
            log(f"      [{lanes} lanes] {msg}")

        try:
            rep = build(qm, "icebreaker", out / f"icebreaker-{lanes}", lanes=lanes, progress=say,
                        clock_mhz=BOARD_CLOCK_MHZ)
        except GruHwError as exc:  # does not fit, or a tool failed: report it and go on
            say(str(exc))
            return {"lanes": lanes, "error": str(exc)}
        return {"lanes": lanes, **{k: rep[k] for k in ("fmax_mhz", "clock_mhz", "utilization",
                                                       "cycles_per_step", "latency_us_per_step")}}

    with ThreadPoolExecutor(max_workers=2) as pool:
        return sorted(pool.map(one, sorted(BOARD_LANES, reverse=True)), key=lambda b: b["lanes"])


def _summary_table(s: dict, builds: list[dict]) -> str:
    rows = [
        ("model", s["model"]),
        ("float test accuracy", f"{100 * s['float_accuracy']:.2f}%"),
        ("fixed-point test accuracy (16-bit)", f"{100 * s['fixed_accuracy']:.2f}%"),
        ("max |h - h_float| (16-bit, all steps)", f"{s['max_h_err_16bit']:.4f}"),
        ("PWL max error sigmoid / tanh", f"{s['sigmoid_max_err']:.5f} / {s['tanh_max_err']:.5f}"),
        (f"cycles per step at {LANES} lanes", f"{s['cycles_per_step']} (ideal {s['ideal_cycles_per_step']})"),
        ("RTL simulation vs golden",
         f"{s['rtl_sim']['sequences']} sequences, {'bit-exact' if s['rtl_sim']['match'] else 'MISMATCH'}"),
    ]
    if builds:
        wb, ab = s["board_bits"]["weight_bits"], s["board_bits"]["act_bits"]
        acc = next((d["accuracy"] for d in s["bit_sweep"]
                    if (d["weight_bits"], d["act_bits"]) == (wb, ab)), None)
        if acc is not None:
            rows.append((f"test accuracy at {wb}/{ab} bits (board)", f"{100 * acc:.2f}%"))
    for b in builds:
        name = f"iCEBreaker, {b['lanes']} lanes"
        if "error" in b:
            rows.append((name, b["error"]))
            continue
        u = b["utilization"]
        dsp = u.get("ICESTORM_DSP", {})
        lc = u.get("ICESTORM_LC", {})
        ram = u.get("ICESTORM_RAM", {})
        rows.append((name, f"Fmax {b['fmax_mhz']:.1f} MHz (clock {b['clock_mhz']:.1f}), "
                           f"{lc.get('used', '?')}/{lc.get('available', '?')} LC, "
                           f"{dsp.get('used', '?')}/{dsp.get('available', '?')} DSP, "
                           f"{ram.get('used', '?')}/{ram.get('available', '?')} BRAM, "
                           f"{b['cycles_per_step']} cycles = {b['latency_us_per_step']:.2f} us/step"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
