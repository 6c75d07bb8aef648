"""Cycles per step against the tail width K (issue 13): the example 12-32-9 GRU and a 40-128 GRU.

Prints a markdown table: for each model and lane count, the ideal ceil(3H(I+H)/P) and the
schedule's steady-state cycles per step for each tail width. With ``--sim`` every cell is
confirmed in Amaranth's simulator: sequences of T and T + 1 steps sent to an idle core, outputs
equal to the golden model, measured cycles equal to the schedule's cycles_per_sequence, and
their difference (the measured cycles per step) equal to the table's figure.

    python bench/tail_width.py [--widths 1,3,6] [--profile dsp] [--sim] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gru_hw.config import get_profile  # noqa: E402
from gru_hw.golden import int_forward_q, quantize_inputs  # noqa: E402
from gru_hw.model import GRULayer, GRUModel  # noqa: E402
from gru_hw.quant import choose_spec, quantize_model  # noqa: E402
from gru_hw.schedule import Schedule  # noqa: E402

#: (model, lane counts) of the issue's targets
CASES = [("example 12-32-9", (24, 48, 96)), ("40-128", (128,))]


def float_models():
    """Return {name: GRUModel}: the shipped example (bench/cycles.py) and a random 40-128."""
    from cycles import load_model

    ex, _ = load_model()
    rng = np.random.default_rng(3)
    big = GRUModel((GRULayer(rng.normal(0, 0.1, (384, 40)), rng.normal(0, 0.1, (384, 128)),
                             rng.normal(0, 0.1, 384), rng.normal(0, 0.1, 384)),), True, None)
    return {"example 12-32-9": ex, "40-128": big}


def models():
    """Return {name: QuantModel}: :func:`float_models` at 16/16 bits."""
    return {name: quantize_model(m, choose_spec(m, 16, 16))
            for name, m in float_models().items()}


def measure(qm, lanes: int, profile, steps: int) -> int:
    """Return the measured cycles per step (T + 1 steps minus T steps), checking golden and
    the schedule on both sequences."""
    from gru_hw.amaranth_sim import simulate

    sch = Schedule(qm, lanes, profile=profile)
    rng = np.random.default_rng(1)
    got = []
    for t in (steps, steps + 1):
        xq, _ = quantize_inputs(qm.spec, rng.normal(0, 1, (1, t, qm.input_size)))
        y, _, cyc = simulate(qm, xq, np.array([t]), lanes=lanes, profile=profile)
        assert np.array_equal(y, int_forward_q(qm, xq, np.array([t])).y), "output != golden"
        assert int(cyc[0]) == sch.cycles_per_sequence(t), (int(cyc[0]), sch.cycles_per_sequence(t))
        got.append(int(cyc[0]))
    return got[1] - got[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="1,3,6", help="tail widths K (default: %(default)s)")
    ap.add_argument("--profile", default="dsp", help="base profile (default: %(default)s)")
    ap.add_argument("--sim", action="store_true", help="confirm every cell in simulation")
    ap.add_argument("--steps", type=int, default=3, help="T of the simulated sequences")
    args = ap.parse_args(argv)
    base = get_profile(args.profile)
    widths = [int(v) for v in args.widths.split(",")]
    qms = models()
    print("| model | lanes | ideal | " + " | ".join(f"K = {k}" for k in widths) + " |")
    print("|---|---:|---:|" + "---:|" * len(widths))
    t0 = time.time()
    for name, lane_counts in CASES:
        qm = qms[name]
        for p in lane_counts:
            cells = []
            for k in widths:
                prof = base.with_(tail_width=k)
                cps = Schedule(qm, p, profile=prof).cycles_per_step
                if args.sim:
                    meas = measure(qm, p, prof, args.steps)
                    assert meas == cps, f"{name} P={p} K={k}: measured {meas}/step != {cps}"
                cells.append(str(cps))
            print(f"| {name} | {p} | {Schedule(qm, p).ideal_cycles_per_step} | "
                  + " | ".join(cells) + " |", flush=True)
    how = (f"each cell confirmed in Amaranth's simulator ({time.time() - t0:.0f} s): outputs "
           "equal golden, cycles equal the schedule" if args.sim else "schedule only")
    print(f"\nCycles per step (steady state, input always valid, output always ready), profile "
          f"`{base.name}` with tail width K; {how}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
