"""Board builds of the 12-input, 32-hidden GRU with a 9-way head (the Japanese-vowels model).

Prints one markdown table (then short notes): per build, the clock, Fmax after routing,
LC-or-LUT/FF/DSP/BRAM use, cycles and microseconds per time step, the synthesized-netlist check
(``gru-hw build --verify``) when it was run, and the build time. A sweep builds lane counts from 1
up (stopping at the first that does not fit). Without ``--clock-mhz`` each build asks for the
board's default clock and is rebuilt once at 90 % of the routed Fmax when that is missed (as
``gru-hw build`` does); with ``--clock-mhz`` a missed clock is reported, not retried.
``--from-report`` builds nothing: it prints the rows of existing ``gru-hw build`` output folders
and, below the table, the ``gru-hw build`` command equivalent to each.

    python bench/boards.py          # iCEBreaker (8/8 bits) and ULX3S-85F (16/16 bits), lane sweeps
    python bench/boards.py --board ulx3s-25f --lanes 4 8 16 --weight-bits 8 --act-bits 8
    python bench/boards.py --board icebreaker --lanes 1 2 4 --clock-mhz 36 --keep build/bench/sweep
    python bench/boards.py --from-report build/bench/sweep/icebreaker-1 /tmp/ice8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from gru_hw.board import DoesNotFit, TimingNotMet, build  # noqa: E402
from gru_hw.boards import BOARDS  # noqa: E402
from gru_hw.errors import GruHwError  # noqa: E402
from gru_hw.quant import DEFAULT_ACT_BITS, DEFAULT_WEIGHT_BITS, choose_spec, quantize_model  # noqa: E402

#: board -> (lane counts, (weight bits, activation bits)) of the default sweep
SWEEPS = {"icebreaker": ([1, 2, 4, 8], (8, 8)),
          "ulx3s-85f": ([1, 4, 8, 16, 32, 96], (16, 16))}

EXAMPLE = "gru_hw/data/japanese_vowels_gru.pt"

HEADERS = ["board", "lanes", "bits (w/a)", "weights", "clock MHz", "Fmax MHz", "LC or LUT", "FF",
           "DSP", "BRAM", "cycles/step", "us/step at Fmax", "us/step at clock", "netlist check",
           "build s"]


def load_model():
    """The shipped example model, or random weights of the same shape; and where it came from."""
    try:
        from gru_hw.importers import load_model as _load

        return _load(ROOT / EXAMPLE), EXAMPLE
    except (GruHwError, ImportError) as exc:
        from gru_hw.model import DenseHead, GRULayer, GRUModel

        rng = np.random.default_rng(0)
        model = GRUModel((GRULayer(rng.normal(0, .3, (96, 12)), rng.normal(0, .3, (96, 32)),
                                   rng.normal(0, .1, 96), rng.normal(0, .1, 96)),),
                         head=DenseHead(rng.normal(0, .3, (9, 32)), rng.normal(0, .1, 9)))
        return model, f"random 12-32-9 weights ({exc})"


def load_qm(weight_bits: int, act_bits: int):
    """The example model (see :func:`load_model`) quantized at the given widths; and its source."""
    model, src = load_model()
    return quantize_model(model, choose_spec(model, weight_bits, act_bits)), src


def _cell(u: dict, key: str) -> str:
    return f"{u[key]['used']}/{u[key]['available']}" if key in u else "-"


def row(r: dict, seconds: float | None = None) -> str:
    """One table row from a report.json dict."""
    q = r.get("quant", {})
    u = r["utilization"]
    v = r.get("verify")
    check = "-" if not v else (f"equal on {v['sequences']} seq." if v["match"] else "DIFFERS")
    met = "met" if r["timing_met"] else "missed"
    secs = r.get("build_seconds") if seconds is None else seconds
    cells = [f"{r['board']} ({r['device']})", r["lanes"],
             f"{q.get('weight_bits', '?')}/{q.get('act_bits', '?')}",
             "run-time" if r.get("runtime_weights") else "fixed",
             f"{r['clock_mhz']:g} ({met})", f"{r['fmax_mhz']:.2f}", _cell(u, "lut"), _cell(u, "ff"),
             _cell(u, "dsp"), _cell(u, "bram"), r["cycles_per_step"],
             f"{r['latency_us_per_step']:.2f}",
             f"{r['latency_us_per_step_at_clock']:.2f}" if r["timing_met"] else "-", check,
             "-" if secs is None else f"{secs:.0f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _blank_row(board: str, lanes: int, bits: str, what: str) -> str:
    cells = [board, lanes, bits, what] + [""] * (len(HEADERS) - 4)
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_header() -> None:
    print("| " + " | ".join(HEADERS) + " |")
    print("|---|---:|---|---|---:|---:|---|---:|---|---|---:|---:|---:|---|---:|")


def command_for(build_dir: str, r: dict) -> str:
    """The ``gru-hw build`` command that makes the build described by report.json ``r``."""
    q = r.get("quant", {})
    wb, ab = q.get("weight_bits"), q.get("act_bits")
    model = EXAMPLE if _is_example(r) else "MODEL"
    cmd = f"gru-hw build {model} --board {r['board']} -o {build_dir} --lanes {r['lanes']}"
    if (wb, ab) != (DEFAULT_WEIGHT_BITS, DEFAULT_ACT_BITS):
        cmd += f" --weight-bits {wb} --act-bits {ab}"
    if q.get("calibrated"):
        cmd += " --calibrate INPUTS"
    if r.get("runtime_weights"):
        cmd += " --runtime-weights"
    cmd += f" --clock-mhz {r['clock_mhz']:g}"
    if r.get("pnr_seeds"):
        cmd += f" --seeds {len(r['pnr_seeds'])}"
    if r.get("verify"):
        cmd += f" --verify {r['verify']['sequences']}"
    return cmd


def _is_example(r: dict) -> bool:
    """Whether the build's model hash is that of the shipped example at the build's formats."""
    try:
        from gru_hw.importers import load_model as _load
        from gru_hw.protocol import model_hash
        from gru_hw.quant import QuantSpec

        qm = quantize_model(_load(ROOT / EXAMPLE), QuantSpec.from_json(r["quant"]))
        return model_hash(qm, weights=not r.get("runtime_weights")).hex() == r["model_hash"]
    except Exception:  # noqa: BLE001 - any failure: not shown to be the example
        return False


def from_reports(dirs: list[str], *, header=None, row_of=None, command_of=None) -> int:
    """Print the table rows of existing build folders and the command that makes each.

    ``header``, ``row_of(report)`` and ``command_of(dir, report)`` default to this table's
    (:func:`print_header`, :func:`row`, :func:`command_for`); other benchmarks pass their own.
    """
    header, row_of = header or print_header, row_of or row
    command_of = command_of or command_for
    reports = []
    for d in dirs:
        path = Path(d) / "report.json"
        try:
            reports.append((d, path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{path}: cannot read ({exc})", file=sys.stderr)
            return 2
    header()
    for _d, _p, r in reports:
        print(row_of(r))
    dates = sorted({datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y-%m-%d")
                    for _d, p, _r in reports})
    print(f"\nRead from report.json of existing builds (written {', '.join(dates)}); the "
          "`gru-hw build` command that makes each:\n")
    for d, _p, r in reports:
        print(f"    {command_of(d, r)}")
    return 0


def sweep(args) -> int:
    print_header()
    sources = set()
    for board in args.board or list(SWEEPS):
        default_lanes, (wb, ab) = SWEEPS.get(board, ([1, 2, 4, 8, 16, 32], (8, 8)))
        wb, ab = args.weight_bits or wb, args.act_bits or ab
        qm, src = load_qm(wb, ab)
        sources.add(src)
        name = f"{board} ({BOARDS[board].device})"
        for lanes in args.lanes or default_lanes:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(args.keep) / f"{board}-{lanes}" if args.keep else Path(tmp)
                t = time.monotonic()
                try:
                    kw = {"clock_mhz": args.clock_mhz} if args.clock_mhz else {}
                    r = build(qm, board, out, lanes=lanes, progress=None, **kw)
                except DoesNotFit as exc:
                    print(_blank_row(name, lanes, f"{wb}/{ab}", f"does not fit: {exc.resource} "
                                     f"{exc.used}/{exc.available}"), flush=True)
                    break
                except TimingNotMet:
                    r = json.loads((out / "report.json").read_text())
                except GruHwError as exc:
                    print(_blank_row(name, lanes, f"{wb}/{ab}", f"failed: {exc}"), flush=True)
                    continue
                print(row(r, time.monotonic() - t), flush=True)
    print(f"\nModel: {', '.join(sorted(sources))}. One build per row with nextpnr's default seed; "
          + ("clock asked: " + f"{args.clock_mhz:g} MHz, not retried when missed." if args.clock_mhz
             else "a missed default clock is retried once at 90 % of the routed Fmax."))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", action="append", choices=sorted(BOARDS))
    ap.add_argument("--lanes", type=int, nargs="+")
    ap.add_argument("--keep", metavar="DIR", help="keep build directories under DIR")
    ap.add_argument("--weight-bits", type=int, default=None, help="default: per board")
    ap.add_argument("--act-bits", type=int, default=None, help="default: per board")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="core clock (default: the board's; a missed clock is retried once)")
    ap.add_argument("--from-report", metavar="DIR", nargs="+",
                    help="build nothing: print the rows of these gru-hw build output folders")
    args = ap.parse_args(argv)
    if args.from_report:
        return from_reports(args.from_report)
    return sweep(args)


if __name__ == "__main__":
    sys.exit(main())
