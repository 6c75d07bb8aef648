"""Interleaved streams (S > 1) in the generated Verilog, under the cocotb bench.

The bench keeps a scoreboard per stream: every output beat is compared with the next output due
on the stream it names (bit-exact against :func:`gru_hw.streams.golden_streams`), and must also be
the next output due overall (outputs come in the order their steps were accepted). Cores of 2
and 3 streams run random interleavings with idle input cycles and output backpressure, with a
wide tail (K = 3), a reset_before model, sequence mode and per-stream keep_state; with inputs
always valid and outputs always ready, every beat's accept cycle and every output's cycle equal
:meth:`gru_hw.schedule.Schedule.run_beats`.

Small models (4 inputs, hidden 6-7) keep each Verilator build to seconds; the builds are cached
in pytest's cache folder (:func:`gru_hw.sim.testing.build_root`).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_model
from gru_hw.golden import int_forward_q
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.schedule import Schedule
from gru_hw.sim.job import Options, PortLayout, make_job
from gru_hw.sim.runner import run_job
from gru_hw.sim.testing import build_root, require_tool
from gru_hw.simulate import generate_cached, rtl_run
from gru_hw.streams import assign_streams, golden_streams, interleave

BACKPRESSURE = {"idle": [0, 1, 0, 0, 1, 1, 0], "backpressure": {"random": 0.45, "seed": 5}}


@pytest.fixture(scope="module")
def sim_root(request, tmp_path_factory):
    return build_root(request.config, tmp_path_factory)


def _qm(seed, hidden, *, reset_after=True, head=None, inputs=4):
    model = random_model(np.random.default_rng(seed), inputs, hidden, reset_after=reset_after,
                         head=head)
    return quantize_model(model, choose_spec(model, 10, 12))


def _inputs(qm, seed, n, t_max):
    rng = np.random.default_rng(seed)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (n, t_max, qm.input_size))
    lengths = rng.integers(1, t_max + 1, n)
    lengths[1] = 1  # a one-step sequence: first and last on one beat
    return xq, lengths


def _check(res, qm, xq, lengths, *, streams, sequence=False, keep_state=False, stream_of=None):
    """The run matched, and its outputs equal the per-stream golden."""
    assert res["match"], res["mismatch"]
    sid = assign_streams(xq.shape[0], streams, stream_of)
    y, h = golden_streams(qm, xq, lengths, sid, sequence=sequence, keep_state=keep_state)
    np.testing.assert_array_equal(res["y"], y)
    if sequence:
        np.testing.assert_array_equal(res["h"], h)
    return y, h


def _assert_cycles_are_the_schedule(res, qm, lanes, lengths, *, streams, sequence=False,
                                    profile=None, order="round_robin", seed=0):
    sch = Schedule(qm, lanes, profile=profile, streams=streams, sequence=sequence)
    sid = assign_streams(len(lengths), streams)
    beats = interleave(lengths, sid, order=order, seed=seed)
    acc, outs = sch.run_beats([(int(sid[n]), t == lengths[n] - 1) for n, t in beats])
    assert res["accept_cycles"].tolist() == [a - acc[0] for a in acc]
    # the outputs due, in sending order, on the bench's clock (from the first accept)
    assert res["output_cycles"].tolist() == [o - acc[0] for o in outs if o is not None]
    first = {}
    last = {}
    for k, (n, t) in enumerate(beats):
        first.setdefault(n, acc[k])
        if t == lengths[n] - 1:
            last[n] = outs[k]
    assert res["cycles"].tolist() == [last[n] - first[n] for n in range(len(lengths))]


# ---- pure Python: the payloads and the job -------------------------------------------------------
def test_stream_field_packs_after_last():
    lay = PortLayout(2, 4, 1, 6, head_outputs=1, head_width=3, stream_width=2)
    assert (lay.in_width, lay.out_total_width, lay.max_streams) == (12, 12, 4)
    v = lay.pack_input(np.array([-1, 2]), False, True, stream=3)
    assert v == 0xF | (2 << 4) | (1 << 9) | (3 << 10)
    out = 0x3F | (0b101 << 6) | (1 << 9) | (2 << 10)
    assert lay.unpack_output(out) == ([-1], [-3], 1)
    assert lay.unpack_stream(out) == 2
    with pytest.raises(ValueError, match="stream id 4 does not fit"):
        lay.pack_input(np.array([0, 0]), True, True, stream=4)
    assert PortLayout(2, 4, 1, 6).unpack_stream(out) == 0


def test_layout_reads_the_stream_fields_of_a_generated_core(tmp_path):
    qm = _qm(1, [3], head=2, inputs=2)
    _, info = generate_cached(qm, tmp_path, lanes=3, streams=3)
    lay = PortLayout.from_ports(info["ports"])
    assert lay.stream_width == 2 and lay.max_streams == 4
    assert info["streams"] == 3 and info["schedule"]["streams"] == 3
    ports = {p["name"]: p for p in info["ports"]}
    assert ports["i_stream__payload"]["fields"]["stream"] == [2 * lay.x_width + 2, 2]
    assert ports["o_stream__payload"]["fields"]["stream"][0] == 2 * lay.out_width + 1
    _, one = generate_cached(qm, tmp_path, lanes=3)
    assert PortLayout.from_ports(one["ports"]).stream_width == 0 and one["streams"] == 1
    bad = [dict(p) for p in info["ports"]]
    for p in bad:
        if p["name"] == "o_stream__payload":
            p["fields"] = {**p["fields"], "stream": [p["fields"]["stream"][0], 1]}
    with pytest.raises(ValueError, match="o_stream__payload.stream: 1 bits"):
        PortLayout.from_ports(bad)


def test_job_interleaves_streams_and_keeps_state_per_stream():
    lay = PortLayout(1, 8, 1, 8, stream_width=1)
    xq = np.arange(4 * 3).reshape(4, 3, 1)
    lengths = np.array([2, 3, 1, 2])
    y = np.arange(4).reshape(4, 1)
    job = make_job(lay, xq, lengths, y=y, streams=2, keep_state=True)
    # round robin: s0 = seqs 0, 2; s1 = seqs 1, 3
    assert job.beat_seq.tolist() == [0, 1, 0, 1, 2, 1, 3, 3]
    assert job.beat_stream.tolist() == [0, 1, 0, 1, 0, 1, 1, 1]
    assert job.first.tolist() == [True, True, False, False, False, False, False, False]
    assert job.last.tolist() == [False, False, True, False, True, True, False, True]
    assert job.exp_seq.tolist() == [0, 2, 1, 3] and job.exp_stream.tolist() == [0, 0, 1, 1]
    assert job.exp_y[:, 0].tolist() == [0, 2, 1, 3]
    job = make_job(lay, xq, lengths, y=y, streams=2, order="random", order_seed=4)
    assert sorted(job.beat_seq.tolist()) == [0, 0, 1, 1, 1, 2, 3, 3]
    assert job.first.sum() == 4  # every sequence starts from h = 0 without keep_state
    one = make_job(lay, xq, lengths, y=y)  # a one-stream job on the same core: stream 0
    assert one.beat_seq.tolist() == [0, 0, 1, 1, 1, 2, 3, 3] and not one.beat_stream.any()
    with pytest.raises(ValueError, match="no stream field"):
        make_job(PortLayout(1, 8, 1, 8), xq, lengths, y=y, streams=2)
    with pytest.raises(ValueError, match="1-bit stream field"):
        make_job(lay, xq, lengths, y=y, streams=3)


def test_job_round_trips_through_its_files(tmp_path):
    from gru_hw.sim.job import Job

    lay = PortLayout(1, 8, 1, 8, stream_width=2)
    xq = np.arange(6).reshape(3, 2, 1)
    job = make_job(lay, xq, np.array([2, 1, 2]), y=np.zeros((3, 1)), streams=3,
                   options=Options(label="x"))
    job.save(tmp_path)
    back = Job.load(tmp_path)
    assert back.streams == 3 and back.layout == lay
    assert back.beat_stream.tolist() == job.beat_stream.tolist() == [0, 1, 2, 0, 2]
    assert back.exp_stream.tolist() == [1, 0, 2]


# ---- Verilator: a two-stream core ----------------------------------------------------------------
S2 = {"seed": 11, "hidden": [6], "head": 2, "lanes": 6}


def _s2():
    return _qm(S2["seed"], S2["hidden"], head=S2["head"])


@pytest.mark.parametrize("seed", [1, 2])
def test_two_streams_random_interleaving_with_backpressure(seed, sim_root, tmp_path):
    require_tool("verilator")
    qm = _s2()
    xq, lengths = _inputs(qm, 20 + seed, 7, 5)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=S2["lanes"], streams=2,
                  order="random", order_seed=seed, build_root=sim_root, test_dir=tmp_path,
                  options=BACKPRESSURE)
    _check(res, qm, xq, lengths, streams=2)
    # the streams really interleaved: not each sequence whole
    assert res["beats"] != interleave(lengths, assign_streams(7, 2), order="blocks")


def test_two_streams_keep_state_per_stream(sim_root, tmp_path):
    """keep_state: each stream's sequences continue that stream's state (not the other's)."""
    require_tool("verilator")
    qm = _s2()
    xq, lengths = _inputs(qm, 31, 6, 4)
    stream_of = [0, 1, 1, 0, 1, 0]
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=S2["lanes"], streams=2,
                  stream_of=stream_of, keep_state=True, order="random", order_seed=7,
                  build_root=sim_root, test_dir=tmp_path, options=BACKPRESSURE)
    y, _ = _check(res, qm, xq, lengths, streams=2, keep_state=True, stream_of=stream_of)
    # the per-stream golden is not the one-stream golden: the test tells them apart
    assert not np.array_equal(y, int_forward_q(qm, xq, lengths, keep_state=True).y)


def test_two_streams_cycles_are_the_schedule(sim_root, tmp_path):
    """Inputs always valid, outputs always ready, round robin: every accept and every output
    on the cycle Schedule.run_beats gives; and faster per step than one stream."""
    require_tool("verilator")
    qm = _s2()
    xq, lengths = _inputs(qm, 41, 6, 6)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=S2["lanes"], streams=2,
                  build_root=sim_root, test_dir=tmp_path)
    _check(res, qm, xq, lengths, streams=2)
    _assert_cycles_are_the_schedule(res, qm, S2["lanes"], lengths, streams=2)
    sch = Schedule(qm, S2["lanes"], streams=2)
    assert sch.cycles_per_stream_step < Schedule(qm, S2["lanes"]).cycles_per_step


def test_two_streams_reset_mid_stream(sim_root, tmp_path):
    """A reset while both streams are in flight: afterwards the core is a fresh one."""
    require_tool("verilator")
    qm = _s2()
    xq, lengths = _inputs(qm, 51, 5, 4)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=S2["lanes"], streams=2,
                  order="random", order_seed=3, build_root=sim_root, test_dir=tmp_path,
                  options={"reset_after_beats": 5, "backpressure": [0, 1]})
    _check(res, qm, xq, lengths, streams=2)
    assert res["reset"]["after_beats"] >= 5


def test_bench_names_the_stream_of_a_wrong_output(sim_root, tmp_path):
    """Expectations made for another stream assignment: the per-stream scoreboard reports the
    first output that differs, naming its stream."""
    require_tool("verilator")
    qm = _s2()
    xq, lengths = _inputs(qm, 61, 4, 3)
    lengths[:] = 3
    verilog, info = generate_cached(qm, sim_root, lanes=S2["lanes"], streams=2)
    lay = PortLayout.from_ports(info["ports"])
    sid = [0, 0, 1, 1]
    y, _ = golden_streams(qm, xq, lengths, sid, keep_state=True)
    wrong, _ = golden_streams(qm, xq, lengths, [0, 1, 0, 1], keep_state=True)
    job = make_job(lay, xq, lengths, y=wrong, streams=2, stream_of=sid, keep_state=True,
                   options=Options(stall_cycles=5000))
    res = run_job(verilog, job, simulator="verilator", build_root=sim_root, test_dir=tmp_path,
                  waves_on_failure=False)
    assert not res["match"]
    # the first output due (in sending order) that the wrong expectations get wrong
    bad = next(int(n) for n in job.exp_seq if not np.array_equal(y[n], wrong[n]))
    assert f"sequence {bad}, step 2, index" in res["mismatch"]
    assert f"on stream {sid[bad]})" in res["mismatch"]


def test_icarus_two_streams_random_interleaving(sim_root, tmp_path):
    require_tool("icarus")
    qm = _s2()
    xq, lengths = _inputs(qm, 71, 4, 4)
    res = rtl_run(qm, xq, lengths, simulator="icarus", lanes=S2["lanes"], streams=2,
                  order="random", order_seed=9, keep_state=True, build_root=sim_root,
                  test_dir=tmp_path, options=BACKPRESSURE)
    _check(res, qm, xq, lengths, streams=2, keep_state=True)


# ---- Verilator: three streams: reset_before in sequence mode, and a wide tail --------------------
def test_three_streams_reset_before_sequence_mode(sim_root, tmp_path):
    """A reset_before model, h of every step out, per-stream keep_state, random interleaving
    with backpressure; then round robin, free running: cycles are the schedule's."""
    require_tool("verilator")
    qm = _qm(12, [7], reset_after=False)
    lanes = 5
    xq, lengths = _inputs(qm, 81, 7, 4)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, streams=3,
                  sequence=True, keep_state=True, order="random", order_seed=4,
                  build_root=sim_root, test_dir=tmp_path / "bp", options=BACKPRESSURE)
    _check(res, qm, xq, lengths, streams=3, sequence=True, keep_state=True)
    free = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, streams=3,
                   sequence=True, build_root=sim_root, test_dir=tmp_path / "free")
    _check(free, qm, xq, lengths, streams=3, sequence=True)
    _assert_cycles_are_the_schedule(free, qm, lanes, lengths, streams=3, sequence=True)


def test_three_streams_wide_tail(sim_root, tmp_path):
    """Tail width 3 (profile dsp-k3, lanes a multiple of 3) with a head: exact under random
    interleaving and backpressure; free running round robin: the schedule's cycles."""
    require_tool("verilator")
    qm = _qm(13, [6], head=3)
    lanes, profile = 6, "dsp-k3"
    xq, lengths = _inputs(qm, 91, 7, 5)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, streams=3,
                  profile=profile, order="random", order_seed=6, build_root=sim_root,
                  test_dir=tmp_path / "bp", options=BACKPRESSURE)
    _check(res, qm, xq, lengths, streams=3)
    assert res["spec_json"]["profile"]["tail_width"] == 3
    free = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, streams=3,
                   profile=profile, build_root=sim_root, test_dir=tmp_path / "free")
    _check(free, qm, xq, lengths, streams=3)
    _assert_cycles_are_the_schedule(free, qm, lanes, lengths, streams=3, profile=profile)


# ---- the command line ----------------------------------------------------------------------------
def test_cli_simulate_streams_in_verilator(tmp_path, capsys):
    """gru-hw simulate --streams 3 --interleave random --seed: exact, and the cycles per
    stream-step measured are the schedule's for the same beats."""
    require_tool("verilator")
    import json

    from gru_hw.cli import main

    model = random_model(np.random.default_rng(14), 4, [6], head=2)
    model.save_npz(tmp_path / "m.npz")
    rng = np.random.default_rng(15)
    np.savez(tmp_path / "in.npz", x=rng.normal(0, 1, (5, 4, 4)), lengths=np.array([4, 1, 3, 4, 2]))
    code = main([str(a) for a in ("simulate", tmp_path / "m.npz", tmp_path / "in.npz", "-o",
                                  tmp_path / "s.npz", "--lanes", "6", "--streams", "3",
                                  "--interleave", "random", "--seed", "5", "--json",
                                  "--build-dir", tmp_path / "b", "--weight-bits", "10",
                                  "--act-bits", "12")])
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out)
    assert s["match"] and s["simulator"] == "verilator" and s["streams"] == 3
    assert s["accepts_match_model"] is True
    assert s["cycles_per_stream_step"] == s["cycles_per_stream_step_model"]
    assert s["cycles_per_stream_step_schedule"] == Schedule(
        quantize_model(model, choose_spec(model, 10, 12)), 6, streams=3).cycles_per_stream_step


@pytest.mark.slow
def test_example_two_streams_96_lanes_in_verilator(sim_root, tmp_path):
    """Issue 13's streams target in Verilator: the example (16/16 bits) at 96 lanes, K = 6,
    2 streams: exact under a random interleaving with backpressure, and with inputs always
    valid / outputs always ready every beat on the schedule's cycle (48 cycles per
    stream-step in the steady state)."""
    from pathlib import Path

    from gru_hw.importers import load_model

    require_tool("verilator")
    ex = load_model(Path(__file__).resolve().parents[1] / "gru_hw" / "data" /
                    "japanese_vowels_gru.pt")
    qm = quantize_model(ex, choose_spec(ex, 16, 16))
    rng = np.random.default_rng(96)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int // 4, f.max_int // 4, (4, 8, qm.input_size))
    lengths = np.array([8, 8, 5, 7])
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=96, profile="dsp-k6", streams=2,
                  order="random", order_seed=3, build_root=sim_root, test_dir=tmp_path / "bp",
                  options=BACKPRESSURE)
    _check(res, qm, xq, lengths, streams=2)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=96, profile="dsp-k6", streams=2,
                  build_root=sim_root, test_dir=tmp_path / "rr")
    _check(res, qm, xq, lengths, streams=2)
    _assert_cycles_are_the_schedule(res, qm, 96, lengths, streams=2, profile="dsp-k6")
    acc = res["accept_cycles"]
    assert (acc[6] - acc[4]) / 2 == Schedule(qm, 96, profile="dsp-k6",
                                             streams=2).cycles_per_stream_step == 48
