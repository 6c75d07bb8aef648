"""The cocotb bench itself, on a stand-in core with the same ports (tests/standin_core.py).

The stand-in's model is one line (running sums), so these tests check the bench: handshakes under
idle and backpressure, first/last and keep-state, the mid-stream reset, per-sequence cycle counts,
mismatch messages, waveforms on failure and the hung-core timeout, in both simulators.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gru_hw.sim.job import Options, PortLayout, make_job, pause_generator
from gru_hw.sim.runner import SIMULATORS, run_job
from standin_core import running_sum_model, write_standin
from gru_hw.sim.testing import build_root, require_tool

I, O, XW, OW, LATENCY = 3, 4, 8, 12, 2


@pytest.fixture(scope="session")
def sim_root(request, tmp_path_factory) -> Path:
    return build_root(request.config, tmp_path_factory)


def _standin(root: Path, *, sequence: bool, bug_at: int | None = None) -> Path:
    name = f"standin-{int(sequence)}-{bug_at}"
    return write_standin(root / name, I, O, x_width=XW, out_width=OW, latency=LATENCY,
                         sequence=sequence, bug_at=bug_at)


def _inputs(seed: int, n: int = 6, t: int = 7):
    rng = np.random.default_rng(seed)
    xq = rng.integers(-(1 << (XW - 1)), 1 << (XW - 1), (n, t, I))
    lengths = rng.integers(1, t + 1, n)
    lengths[0] = 1  # a one-step sequence: first and last on the same beat
    return xq, lengths


def _job(xq, lengths, *, sequence, keep_state, **options) -> object:
    y, h = running_sum_model(xq, lengths, O, OW, sequence=sequence, keep_state=keep_state)
    opts = Options(stall_cycles=300, **options)
    return make_job(PortLayout(I, XW, O, OW), xq, lengths, y=y, h=h, sequence=sequence,
                    keep_state=keep_state, options=opts)


# ---- pure Python parts ---------------------------------------------------------------------------
def test_pack_unpack_round_trip():
    lay = PortLayout(3, 8, 2, 12, head_outputs=2, head_width=5)
    v = lay.pack_input(np.array([-128, 127, -1]), True, False)
    assert v == 0x80 | (0x7F << 8) | (0xFF << 16) | (1 << 24)
    y, yh, last = lay.unpack_output((0x800 | (0x7FF << 12)) | ((0x10 | (0x0F << 5)) << 24)
                                    | (1 << 34))
    assert (y, yh, last) == ([-2048, 2047], [-16, 15], 1)


def test_layout_from_ports_checks_the_contract():
    ports = [
        {"name": "i_stream__payload", "width": 26, "fields": {"x": [0, 24], "first": [24, 1],
                                                              "last": [25, 1]},
         "arrays": {"x": {"count": 3, "width": 8, "signed": True}}},
        {"name": "o_stream__payload", "width": 49, "fields": {"y": [0, 48], "last": [48, 1]},
         "arrays": {"y": {"count": 4, "width": 12, "signed": True}}},
    ]
    assert PortLayout.from_ports(ports) == PortLayout(3, 8, 4, 12)
    ports[0]["fields"]["last"] = [26, 1]
    with pytest.raises(ValueError,
                       match=r"i_stream__payload.last: at \[26, 1\], expected \[25, 1\]"):
        PortLayout.from_ports(ports)


def test_pause_generators():
    assert list(itertools.islice(pause_generator([1, 1, 0]), 7)) == [1, 1, 0, 1, 1, 0, 1]
    assert not any(itertools.islice(pause_generator(None), 100))
    r = list(itertools.islice(pause_generator({"random": 0.25, "seed": 3}), 4000))
    assert 0.2 < sum(r) / len(r) < 0.3
    assert r == list(itertools.islice(pause_generator({"random": 0.25, "seed": 3}), 4000))


def test_make_job_first_last_keep_state():
    xq = np.arange(2 * 3 * I).reshape(2, 3, I)
    job = _job(xq, np.array([2, 3]), sequence=False, keep_state=True)
    assert job.first.tolist() == [True, False, False, False, False]
    assert job.last.tolist() == [False, True, False, False, True]
    assert job.exp_step.tolist() == [1, 2]
    job = _job(xq, np.array([2, 3]), sequence=True, keep_state=False)
    assert job.first.tolist() == [True, False, True, False, False]
    assert job.exp_last.tolist() == job.last.tolist()


# ---- the bench in both simulators ----------------------------------------------------------------
STRESS = {
    "plain": {},
    "stress": {"idle": [1, 1, 0], "backpressure": {"random": 0.5, "seed": 7}},
}


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("stress,sequence,keep_state", [
    ("plain", False, False),
    ("stress", True, True),
    pytest.param("plain", True, True, marks=pytest.mark.slow),
    pytest.param("stress", False, False, marks=pytest.mark.slow),
])
def test_standin_matches(simulator, sequence, keep_state, stress, sim_root, tmp_path):
    require_tool(simulator)
    xq, lengths = _inputs(1)
    verilog = _standin(sim_root, sequence=sequence)
    job = _job(xq, lengths, sequence=sequence, keep_state=keep_state, **STRESS[stress])
    res = run_job(verilog, job, simulator=simulator, build_root=sim_root, test_dir=tmp_path)
    assert res["match"], res["mismatch"]
    assert res["beats_received"] == len(job.exp_y)
    cycles = res["cycles"]
    if stress == "plain":
        # A beat taken at edge 0 leaves BUSY at edge LATENCY + 1; the output is taken at edge
        # LATENCY + 2 and the next beat one edge later (or, with no output, at LATENCY + 2).
        if sequence:
            expected = (LATENCY + 3) * lengths - 1
        else:
            expected = (LATENCY + 2) * lengths
        assert cycles.tolist() == expected.tolist()
    else:
        assert np.all(cycles >= (LATENCY + 2) * lengths - 1)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_standin_reset_mid_stream(simulator, sim_root, tmp_path):
    require_tool(simulator)
    xq, lengths = _inputs(2)
    verilog = _standin(sim_root, sequence=True)
    beats = int(lengths.sum())
    job = _job(xq, lengths, sequence=True, keep_state=True, idle=[0, 1],
               backpressure=[1, 0, 0], reset_after_beats=beats // 2)
    res = run_job(verilog, job, simulator=simulator, build_root=sim_root, test_dir=tmp_path)
    assert res["match"], res["mismatch"]
    assert res["reset"]["after_beats"] == beats // 2
    assert 0 < res["reset"]["outputs_before"] <= beats // 2
    assert res["beats_sent"] == beats  # the whole stream again after the reset


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_standin_mismatch_names_the_beat_and_writes_waves(simulator, sim_root, tmp_path):
    require_tool(simulator)
    xq, lengths = _inputs(3)
    lengths[:] = 4
    verilog = _standin(sim_root, sequence=True, bug_at=6)  # beat 6 = sequence 1, step 2
    job = _job(xq, lengths, sequence=True, keep_state=False,
               backpressure={"random": 0.3, "seed": 1})
    res = run_job(verilog, job, simulator=simulator, build_root=sim_root, test_dir=tmp_path)
    assert not res["match"]
    exp = int(job.exp_y[6][0])
    assert res["mismatch"].startswith(
        f"sequence 1, step 2, index 0: expected {exp}, got {exp + 1} (1 of 4 values differ")
    assert res["waves"] and Path(res["waves"]).stat().st_size > 0
    assert Path(res["waves"]).parent == tmp_path
    assert res["waves"] in res["mismatch"]
    assert res["mismatches"] == 2  # steps 2 and 3 of sequence 1 carry the bad sum


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_standin_hung_core_times_out(simulator, sim_root, tmp_path):
    require_tool(simulator)
    xq, lengths = _inputs(4, n=2)
    verilog = _standin(sim_root, sequence=False)
    # Expect one beat per step from a core that sends one per sequence: it never comes.
    job = _job(xq, lengths, sequence=True, keep_state=False)
    res = run_job(verilog, job, simulator=simulator, build_root=sim_root, test_dir=tmp_path,
                  waves_on_failure=False)
    assert not res["match"]
    assert res["mismatch"].startswith("sequence 0, step 0, index") or \
        "timeout: no handshake for 300 cycles" in res["error"]
    assert "timeout: no handshake for 300 cycles" in res["error"]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_standin_waves_on_request(simulator, sim_root, tmp_path):
    require_tool(simulator)
    xq, lengths = _inputs(5, n=2)
    verilog = _standin(sim_root, sequence=False)
    job = _job(xq, lengths, sequence=False, keep_state=False)
    res = run_job(verilog, job, simulator=simulator, build_root=sim_root, test_dir=tmp_path,
                  waves=True)
    assert res["match"], res["mismatch"]
    suffix = {"icarus": ".vcd", "verilator": (".fst", ".vcd")}[simulator]
    assert res["waves"] and res["waves"].endswith(suffix)
    assert Path(res["waves"]).stat().st_size > 0


def test_icarus_compat_moves_the_time0_trigger():
    from gru_hw.sim.runner import icarus_compat

    text = (b"module m(a, y);\n  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;\n"
            b"  always @* begin\n    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end\n"
            b"  end\nendmodule\n")
    out = icarus_compat(text)
    assert b"reg \\$auto$verilog_backend.cc:2355:dump_module$1 ;\n" in out
    assert b"  initial #0 \\$auto$verilog_backend.cc:2355:dump_module$1 = 1'h0;\n" in out
    assert out.count(b"$auto$") == 3 and icarus_compat(out) == out
