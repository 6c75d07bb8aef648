"""Board builds for the 12-input, 32-hidden GRU with a 9-way head (the Japanese-vowels model).

Prints one markdown table per board: Fmax after routing, LUT/FF/DSP/BRAM use, cycles and
microseconds per time step, for lane counts from 1 up to the largest that fits (a sweep stops at
the first lane count that does not fit). Each build asks for the board's default clock and is
rebuilt once at 90 % of the routed Fmax when that is missed (as ``gru-hw build`` does); a row whose
retry still misses is marked.

    python bench/boards.py          # iCEBreaker (8/8 bits) and ULX3S-85F (16/16 bits), lane sweeps
    python bench/boards.py --board ulx3s-25f --lanes 4 8 16 --weight-bits 8 --act-bits 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from gru_hw.board import DoesNotFit, TimingNotMet, build  # noqa: E402
from gru_hw.boards import BOARDS  # noqa: E402
from gru_hw.errors import GruHwError  # noqa: E402
from gru_hw.quant import choose_spec, quantize_model  # noqa: E402

#: board -> (lane counts, (weight bits, activation bits)) of the default sweep
SWEEPS = {"icebreaker": ([1, 2, 4, 8], (8, 8)),
          "ulx3s-85f": ([1, 4, 8, 16, 32, 96], (16, 16))}


def load_qm(weight_bits: int, act_bits: int):
    """The shipped example model (or random weights of the same shape) at the given widths."""
    src = "gru_hw/data/japanese_vowels_gru.pt"
    try:
        from gru_hw.importers import load_model

        model = load_model(ROOT / src)
    except (GruHwError, ImportError) as exc:
        from gru_hw.model import DenseHead, GRULayer, GRUModel

        print(f"(random 12-32-9 weights: {exc})")
        rng = np.random.default_rng(0)
        model = GRUModel((GRULayer(rng.normal(0, .3, (96, 12)), rng.normal(0, .3, (96, 32)),
                                   rng.normal(0, .1, 96), rng.normal(0, .1, 96)),),
                         head=DenseHead(rng.normal(0, .3, (9, 32)), rng.normal(0, .1, 9)))
        src = "random weights"
    return quantize_model(model, choose_spec(model, weight_bits, act_bits)), src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", action="append", choices=sorted(BOARDS))
    ap.add_argument("--lanes", type=int, nargs="+")
    ap.add_argument("--keep", metavar="DIR", help="keep build directories under DIR")
    ap.add_argument("--weight-bits", type=int, default=None, help="default: per board")
    ap.add_argument("--act-bits", type=int, default=None, help="default: per board")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="core clock (default: the board's; a missed clock is retried once)")
    args = ap.parse_args()
    for board in args.board or list(SWEEPS):
        default_lanes, (wb, ab) = SWEEPS.get(board, ([1, 2, 4, 8, 16, 32], (8, 8)))
        wb, ab = args.weight_bits or wb, args.act_bits or ab
        qm, src = load_qm(wb, ab)
        lanes_list = args.lanes or default_lanes
        print(f"### {board} ({BOARDS[board].device}): {src}, I={qm.input_size}, "
              f"H={qm.hidden_sizes}, O={qm.output_size}, {wb}-bit weights, {ab}-bit activations\n")
        print("| lanes | core | Fmax MHz | clock MHz | LUT | FF | DSP | BRAM | cycles/step "
              "| us/step at Fmax | build s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for lanes in lanes_list:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(args.keep) / f"{board}-{lanes}" if args.keep else Path(tmp)
                t = time.monotonic()
                note = ""
                try:
                    kw = {"clock_mhz": args.clock_mhz} if args.clock_mhz else {}
                    r = build(qm, board, out, lanes=lanes, progress=None, **kw)
                except DoesNotFit as exc:
                    print(f"| {lanes} | does not fit: {exc.resource} {exc.used}/{exc.available} "
                          "| | | | | | | | | |")
                    break
                except TimingNotMet:
                    r = json.loads((out / "report.json").read_text())
                    note = " (clock missed)"
                except GruHwError as exc:
                    print(f"| {lanes} | failed: {exc} | | | | | | | | | |")
                    continue
                u = r["utilization"]

                def cell(k):
                    return f"{u[k]['used']}/{u[k]['available']}" if k in u else "-"

                print(f"| {lanes} | {r['core']} | {r['fmax_mhz']:.1f} | {r['clock_mhz']:.2f}{note} "
                      f"| {cell('lut')} | {cell('ff')} | {cell('dsp')} | {cell('bram')} "
                      f"| {r['cycles_per_step']} | {r['latency_us_per_step']:.3f} "
                      f"| {time.monotonic() - t:.0f} |", flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
