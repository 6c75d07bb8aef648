"""Cycles per step of GRUCore vs the ideal ceil(3H(I+H)/P), for a 12-input, 32-hidden GRU + 9-way head.

Prints a markdown table: for each lane count, the ideal, the schedule's steady-state cycles/step,
the measured cycles/step on whole 29-step sequences in Amaranth's simulator
(cycles_per_sequence(29) measured / 29), and the ratio to the ideal; then a short note. Each
simulated row asserts that the output equals the golden model and the measured cycles the schedule.

    python bench/cycles.py [--lanes 1,2,4,8,16,32,96] [--steps 29] [--profile dsp] [--no-sim]

``--profile`` takes a profile name with a tail width, e.g. ``dsp-k3`` (bench/tail_width.py
compares tail widths).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gru_hw.golden import int_forward_q, quantize_inputs  # noqa: E402
from gru_hw.model import DenseHead, GRULayer, GRUModel  # noqa: E402
from gru_hw.quant import choose_spec, quantize_model  # noqa: E402
from gru_hw.config import PROFILES, get_profile  # noqa: E402
from gru_hw.schedule import Schedule  # noqa: E402


def load_model():
    """Return the shipped Japanese Vowels GRU if it loads, else a random 12-32-9 GRU."""
    path = Path(__file__).resolve().parents[1] / "gru_hw" / "data" / "japanese_vowels_gru.pt"
    try:
        from gru_hw.importers import load_model as _load

        model = _load(path)
        if model.input_size == 12 and model.hidden_size == 32:
            return model, path.name
    except Exception:  # noqa: BLE001 - any failure means: use the random model
        pass
    rng = np.random.default_rng(0)
    layer = GRULayer(rng.normal(0, 0.3, (96, 12)), rng.normal(0, 0.3, (96, 32)),
                     rng.normal(0, 0.1, 96), rng.normal(0, 0.1, 96))
    head = DenseHead(rng.normal(0, 0.3, (9, 32)), rng.normal(0, 0.1, 9))
    return GRUModel((layer,), True, head), "random 12-32-9"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", default="1,2,4,8,16,32,96")
    ap.add_argument("--steps", type=int, default=29)
    ap.add_argument("--profile", default="dsp",
                    help=f"core profile, one of {sorted(PROFILES)} or one with a tail width "
                         "such as dsp-k3 (default: %(default)s; the iCE40 core is 'seq')")
    ap.add_argument("--no-sim", action="store_true", help="schedule only, no Amaranth simulation")
    args = ap.parse_args(argv)
    get_profile(args.profile)  # a bad name fails here, with the list
    model, src = load_model()
    qm = quantize_model(model, choose_spec(model, 16, 16))
    t = args.steps
    rng = np.random.default_rng(1)
    xq, _ = quantize_inputs(qm.spec, rng.normal(0, 1, (1, t, 12)))
    gold = int_forward_q(qm, xq, np.array([t]))
    print("| lanes | ideal | schedule cycles/step | measured cycles/seq | measured /step "
          "| steady-state diff | ratio to ideal | sim s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    issue_is_ideal, intervals = True, set()
    for p in [int(v) for v in args.lanes.split(",")]:
        sch = Schedule(qm, p, profile=args.profile)
        issue_is_ideal &= sch.issue_cycles_per_step == sch.ideal_cycles_per_step
        intervals.add(sch.tail_interval)
        pred = sch.cycles_per_sequence(t)
        if args.no_sim:
            meas, secs = pred, 0.0
        else:
            from gru_hw.amaranth_sim import simulate

            t0 = time.time()
            y, _, cyc = simulate(qm, xq, np.array([t]), lanes=p, profile=args.profile)
            secs = time.time() - t0
            assert np.array_equal(y, gold.y), f"lanes={p}: output differs from golden"
            meas = int(cyc[0])
            assert meas == pred, f"lanes={p}: measured {meas} != schedule {pred}"
        per = meas / t
        print(f"| {p} | {sch.ideal_cycles_per_step} | {sch.cycles_per_step} | {meas} | {per:.1f} "
              f"| {per - sch.cycles_per_step:+.1f} | {sch.cycles_per_step / sch.ideal_cycles_per_step:.3f} "
              f"| {secs:.0f} |", flush=True)
    how = ("schedule only (--no-sim)" if args.no_sim else
           "measured in Amaranth's simulator on one sequence per row, input always valid and output "
           "always ready; every output equals the golden model and every count the schedule")
    print(f"\nModel: {src} at 16/16 bits (I = {qm.input_size}, H = {qm.hidden_sizes[0]}), "
          f"{t} steps, core profile `{args.profile}`; {how}. Ideal: ceil(3H(I+H)/lanes); "
          "sim s: wall seconds of the simulation.")
    issue = ("the lanes' issue cycles per step equal the ideal at every lane count here, so any "
             "excess is cycles in which the lanes wait" if issue_is_ideal else
             "some lane counts issue more cycles than the ideal (partial lane groups)")
    every = " or ".join("every cycle" if i == 1 else f"every {i} cycles" for i in sorted(intervals))
    k = get_profile(args.profile).tail_width
    what = "an emitted row" if k == 1 else f"a beat of up to {k} emitted rows"
    print(f"\nSchedule: {issue}; with this profile the tail takes {what} {every}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
