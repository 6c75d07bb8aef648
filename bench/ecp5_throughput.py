"""Step latency and throughput against lanes, tail width K and streams S, beside PyTorch (issue 13).

For the shipped example (12-32-9) and a 40-128 GRU at 16/16 bits: for each lane count P, tail
width K and stream count S, the physical bound ceil(MACs/P), the cycles of one stream's step
(latency: a step waits on its own stream's previous one) and the cycles per stream-step with S
streams round-robin (throughput), and both in microseconds at a clock (``--clock-mhz``, or the
routed Fmax read from a build's report.json with ``--report DIR``). In the same run, PyTorch on
this CPU (one thread): the same model's step inside a 29-step call at batch 1 (latency) and
at batch S (throughput per stream-step), and the speed-up of the core over it.

With ``--sim`` each cycle figure is confirmed in Amaranth's simulator: S sequences sent
round-robin to an idle core, outputs equal to the per-stream golden model, every input beat
accepted in the cycle the schedule predicts.

    python bench/ecp5_throughput.py [--clock-mhz 90 | --report DIR] [--sim] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402

from gru_hw.config import get_profile  # noqa: E402
from gru_hw.schedule import Schedule  # noqa: E402

#: (model, [(lanes, K), ...], streams): the issue's cases
CASES = [("example 12-32-9", [(24, 3), (48, 6), (96, 6), (96, 9)], (1, 2, 3)),
         ("40-128", [(128, 1), (128, 6)], (1, 2))]


def torch_step_us(model, batch: int, steps: int = 29, reps: int = 300) -> float:
    """PyTorch (one thread) microseconds per time step of a ``steps``-step call at ``batch``
    (per stream-step: divided by the batch), the head included on the last step."""
    import torch

    torch.set_num_threads(1)
    layer = model.layers[0]
    gru = torch.nn.GRU(model.input_size, layer.hidden_size, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(np.asarray(layer.w_ih, dtype=np.float32)))
        gru.weight_hh_l0.copy_(torch.from_numpy(np.asarray(layer.w_hh, dtype=np.float32)))
        gru.bias_ih_l0.copy_(torch.from_numpy(np.asarray(layer.b_ih, dtype=np.float32)))
        gru.bias_hh_l0.copy_(torch.from_numpy(np.asarray(layer.b_hh, dtype=np.float32)))
    head = None
    if model.head is not None:
        head = torch.nn.Linear(layer.hidden_size, model.head.output_size)
    x = torch.randn(batch, steps, model.input_size)

    def call():
        y = gru(x)[0][:, -1]
        return head(y) if head is not None else y

    with torch.inference_mode():
        for _ in range(30):
            call()
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        dt = time.perf_counter() - t0
    return dt / reps / steps / batch * 1e6


def confirm(qm, lanes, profile, streams, steps=4) -> float:
    """Simulate S round-robin sequences; check golden and the schedule; return the measured
    steady-state cycles per stream-step."""
    from gru_hw.amaranth_sim import simulate
    from gru_hw.streams import golden_streams

    sch = Schedule(qm, lanes, profile=profile, streams=streams)
    rng = np.random.default_rng(lanes + streams)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int // 4, f.max_int // 4, (streams, steps, qm.input_size))
    lengths = np.full(streams, steps)
    acc: list[int] = []
    y, _, _ = simulate(qm, xq, lengths, lanes=lanes, profile=profile, streams=streams,
                       accepts=acc)
    gy, _ = golden_streams(qm, xq, lengths, np.arange(streams))
    assert np.array_equal(y, gy), "output != golden"
    want, _ = sch.run_beats(sch.round_robin(steps))
    assert acc == want, (acc, want)
    # a steady round: the second-to-last one (the last steps carry the head)
    return (acc[(steps - 1) * streams] - acc[(steps - 2) * streams]) / streams


def _clock(args) -> tuple[float, str]:
    if args.report:
        rep = json.loads((Path(args.report) / "report.json").read_text())
        f = float(rep["fmax_mhz"])
        return f, (f"the routed Fmax of a {rep['board']} build at {rep['lanes']} lanes, "
                   f"profile {rep['profile']['name'] if isinstance(rep['profile'], dict) else rep['profile']}")
    return args.clock_mhz, "the given clock"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock-mhz", type=float, default=90.0,
                    help="clock for the microsecond columns (default: %(default)s)")
    ap.add_argument("--report", help="a build folder: use its report.json's routed Fmax")
    ap.add_argument("--sim", action="store_true", help="confirm every cycle figure in simulation")
    ap.add_argument("--quick", action="store_true", help="the example only, no 40-128")
    args = ap.parse_args(argv)
    mhz, clock_note = _clock(args)
    from tail_width import float_models, models

    qms, floats = models(), float_models()
    rows = []
    t0 = time.time()
    torch_cache: dict = {}
    for name, cells, stream_counts in CASES:
        if args.quick and not name.startswith("example"):
            continue
        qm = qms[name]
        fm = floats[name]
        for s in stream_counts:
            torch_cache[(name, s)] = torch_step_us(fm, s)
        for lanes, k in cells:
            prof = get_profile("dsp").with_(tail_width=k)
            for s in stream_counts:
                sch = Schedule(qm, lanes, profile=prof, streams=s)
                per = sch.cycles_per_stream_step
                if args.sim:
                    meas = confirm(qm, lanes, prof, s)
                    assert meas == per, f"{name} P={lanes} K={k} S={s}: {meas} != {per}"
                lat_us = sch.cycles_per_step / mhz
                thr_us = per / mhz
                pt_lat, pt_thr = torch_cache[(name, 1)], torch_cache[(name, s)]
                rows.append([name, lanes, k, s, sch.ideal_cycles_per_step, sch.cycles_per_step,
                             f"{per:g}", f"{lat_us:.2f}", f"{thr_us:.2f}", f"{pt_lat:.1f}",
                             f"{pt_thr:.2f}", f"{pt_lat / lat_us:.1f}x", f"{pt_thr / thr_us:.1f}x"])
    print(table(["model", "lanes", "K", "S", "bound ceil(MACs/P)", "cycles/step (one stream)",
                 "cycles per stream-step", "core us/step", "core us per stream-step",
                 "PyTorch us/step (batch 1)", "PyTorch us per stream-step (batch S)",
                 "latency speed-up", "throughput speed-up"], rows))
    how = (f"every cycle figure confirmed in Amaranth's simulator ({time.time() - t0:.0f} s in "
           "all): outputs equal the per-stream golden model, every input beat accepted in the "
           "schedule's cycle" if args.sim else "cycle figures from the schedule (exact: "
           "`--sim` confirms them in simulation)")
    print(f"\nCore microseconds at {mhz:g} MHz ({clock_note}). One stream: cycles/step; S streams "
          "sent round-robin: cycles per stream-step (one step of each stream takes S times "
          "that). PyTorch: one thread, a 29-step call of torch.nn.GRU (+ head) at batch 1 (per "
          "step) and at batch S (per step and sequence), measured in this run on " + machine()
          + f". {how[0].upper() + how[1:]}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
