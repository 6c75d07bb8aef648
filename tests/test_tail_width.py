"""Tail width K > 1 (issue 13): the chain hands the tail beats of up to K rows per cycle.

The profile option, the schedule's beats and the issue's targets, the wide chain exit's and
unit tail's declared latencies against simulation, and whole cores exact against golden (with
valid/ready patterns) whose cycles equal the schedule, in Amaranth's simulator and Verilator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from conftest import random_model
from gru_hw.amaranth_sim import simulate
from gru_hw.config import PROFILES, CoreConfig, CoreProfile, get_profile
from gru_hw.errors import GruHwError
from gru_hw.gateware.chain import ROWSET_CODE
from gru_hw.gateware.chain_wide import WideChainExit
from gru_hw.gateware.tail import TailLatency
from gru_hw.gateware.tail_wide import UnitTail
from gru_hw.golden import int_forward_q
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.schedule import Schedule, Shapes
from gru_hw.simulate import rtl_run
from gru_hw.sim.testing import build_root, require_tool

EXAMPLE = Shapes(12, (32,), True, 9)


def _qm(seed, inputs, hidden, *, reset_after, head, bits=(10, 12)):
    model = random_model(np.random.default_rng(seed), inputs, hidden, reset_after=reset_after,
                         head=head)
    return quantize_model(model, choose_spec(model, *bits))


# ---- the option --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 2, 4, -3, True, 3.0])
def test_tail_width_must_be_one_or_a_multiple_of_three(bad):
    with pytest.raises(GruHwError, match=r"^tail width must be 1 or a positive multiple of 3 "
                                         r"\(the rows of whole hidden units: r, z, n\), got "):
        CoreProfile("x", tail_width=bad)


def test_profiles_by_name_with_a_tail_width():
    assert all(p.tail_width == 1 for p in PROFILES.values())  # existing profiles keep K = 1
    p = get_profile("dsp-k3")
    assert (p.name, p.tail_width, p.tail_units) == ("dsp-k3", 3, 1)
    assert p == PROFILES["dsp"].with_(tail_width=3) and p.with_(tail_width=1) == PROFILES["dsp"]
    assert get_profile("seq-k6").tail_mul == "seq" and get_profile("seq-k6").tail_units == 2
    assert p.to_json()["tail_width"] == 3 and PROFILES["dsp"].to_json()["tail_width"] == 1
    with pytest.raises(GruHwError, match=r"^tail width must be 1 or a positive multiple of 3"):
        get_profile("dsp-k4")
    for name in ("dsp-k", "dsp-k03", "dsps-k3"):
        with pytest.raises(GruHwError, match=r"^core profile must be one of"):
            get_profile(name)


# ---- the schedule ------------------------------------------------------------------------------
def test_beats_of_groups():
    s = Schedule(Shapes(3, (4,), True, 2), 4, profile="dsp-k3")
    emit = s.phases[1]
    assert (emit.rowset, emit.rows, emit.groups, emit.beat) == ("all", 12, 3, 3)
    # groups start at rows 0, 4, 8: leads 0, 1, 2; each takes two beats
    assert [emit.group_lead(g, 4) for g in range(3)] == [0, 1, 2]
    assert [emit.group_beats(g, 4) for g in range(3)] == [2, 2, 2]
    rb = Schedule(Shapes(3, (4,), False, 2), 6, profile="dsp-k6")
    assert [ph.beat for ph in rb.phases] == [4, 4, 2, 2, 6]  # rz: 2U, n: U, head: K
    assert rb.phases[2].urow == 2 and rb.buffer_rows == 4 and rb.park_banks == 6


@pytest.mark.parametrize("k", [3, 6])
@pytest.mark.parametrize("sh", [Shapes(3, (4,), True, 2), Shapes(5, (7, 3), False, None),
                                Shapes(12, (32,), True, 9), Shapes(2, (5, 6), False, 3)],
                         ids=str)
def test_every_row_leaves_in_exactly_one_beat_slot(sh, k):
    for p in sorted({1, 2, 4, 5, 6, 9, 3 * max(sh.hidden_sizes)}):
        if p > 3 * max(sh.hidden_sizes):
            continue
        s = Schedule(sh, p, profile=f"dsp-k{k}")
        for ph in s.phases:
            slots = []
            for g in range(ph.groups):
                first = g * p - ph.group_lead(g, p)  # the row in slot 0 of the first beat
                assert first % ph.beat == 0
                rows = range(g * p, g * p + ph.group_rows(g, p))
                beats = {(r - first) // ph.beat for r in rows}
                assert beats == set(range(ph.group_beats(g, p)))
                slots += [(r // ph.beat, r % ph.beat) for r in rows]
            assert len(set(slots)) == ph.rows and max(b for b, _ in slots) < ph.beats
        cps = s.cycles_per_step
        assert cps >= s.ideal_cycles_per_step
        for t in (2, 5):
            assert s.cycles_per_sequence(t) == s.sequence_overhead + cps * t


def test_issue_targets():
    """Issue 13: the example at 96 lanes <= 100 cycles/step (target <= 80), at 48 lanes
    <= 115; a 40-128 GRU at 128 lanes <= 560 (its MAC floor is 504)."""
    k1, k3, k6 = (PROFILES["dsp"].with_(tail_width=k) for k in (1, 3, 6))
    assert [Schedule(EXAMPLE, p, profile=k1).cycles_per_step for p in (32, 96)] == [192, 192]
    assert Schedule(EXAMPLE, 96, profile=k3).cycles_per_step == 96
    assert Schedule(EXAMPLE, 96, profile=k6).cycles_per_step == 80
    assert Schedule(EXAMPLE, 48, profile=k3).cycles_per_step == 112
    big = Shapes(40, (128,), True, None)
    assert Schedule(big, 128, profile=k1).cycles_per_step == 768
    assert Schedule(big, 128, profile=k3).cycles_per_step == 514
    assert Schedule(big, 128, profile=k6).cycles_per_step == 504 == \
        Schedule(big, 128).ideal_cycles_per_step
    assert Schedule(EXAMPLE, 96, profile=k3).tail_multipliers == 5
    assert Schedule(EXAMPLE, 96, profile=k6).multipliers == 96 + 10


# ---- components: declared latencies ------------------------------------------------------------
def _run(dut, bench, cycles=200):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


@pytest.mark.parametrize("profile", ["dsp-k3", "seq-k3"])
def test_wide_chain_exit_latency_beats_and_leads(profile):
    """Lanes 4, K = 3: groups of the emitted 'all' phase start at rows 0, 4, 8 (leads 0, 1,
    2); beats leave every interval cycles, the first one latency cycles after the load."""
    qm = _qm(5, 3, [4], reset_after=True, head=2)
    cfg = CoreConfig(qm, 4, profile)
    dut = WideChainExit(cfg, UnitTail.interval_of(cfg.profile))
    ti = dut.interval
    emit = next(i for i, ph in enumerate(cfg.schedule.phases) if ph.emit and ph.rowset == "all")
    beats = []

    async def bench(ctx):
        for g in range(3):
            ctx.set(dut.load, 1)
            ctx.set(dut.sums, [100 * g + 10 * i for i in range(4)])
            ctx.set(dut.tag, {"ph": emit, "fgroup": int(g == 0), "nrows": 4, "last": 1,
                              "layer": 0, "rowset": ROWSET_CODE["all"]})
            for cyc in range(2 * ti):  # the group's two beats leave, then the next loads
                await ctx.tick()
                ctx.set(dut.load, 0)
                if ctx.get(dut.beat.valid):
                    b = ctx.get(dut.beat)
                    beats.append((g, cyc, int(b.beat), int(b.valid)))
            while len(beats) < 2 * (g + 1):
                await ctx.tick()
                if ctx.get(dut.beat.valid):
                    b = ctx.get(dut.beat)
                    beats.append((g, -1, int(b.beat), int(b.valid)))

    _run(dut, bench, 300)
    assert dut.latency == WideChainExit.latency_of(cfg.profile) == 3 + cfg.profile.park_read_reg
    assert [(b, v) for _, _, b, v in beats] == [(0, 0b111), (1, 0b001), (1, 0b110), (2, 0b011),
                                                (2, 0b100), (3, 0b111)]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("profile", ["dsp-k3", "dsp-k6", "lut-k3", "seq-k3"])
def test_unit_tail_latencies(profile, reset_after):
    qm = _qm(5, 3, [4], reset_after=reset_after, head=2)
    cfg = CoreConfig(qm, 3, profile)
    dut = UnitTail(cfg)
    lat = TailLatency(cfg.profile, reset_after)
    u = cfg.profile.tail_units
    last_beat, last_lane = 3 // u, 3 % u  # unit 3 is the layer's last
    seen = {}
    rz, n = ("all", "all") if reset_after else ("rz", "n")
    slots = {"all": [3 * last_lane, 3 * last_lane + 1, 3 * last_lane + 2],
             "rz": [2 * last_lane, 2 * last_lane + 1], "n": [last_lane]}

    async def one(ctx, kind):
        rowset = {"z": rz, "n": n, "head": "head"}[kind]
        k = cfg.profile.tail_width
        # head output 1 (the last of 2) is slot 1 of beat 0
        valid = sum(1 << s for s in slots[rowset]) if kind != "head" else 1 << 1
        ctx.set(dut.beat, {"valid": valid, "ax": [3] * k, "ah": [5] * k, "layer": 0,
                           "rowset": ROWSET_CODE[rowset],
                           "beat": 0 if kind == "head" else last_beat})
        await ctx.tick()
        ctx.set(dut.beat.valid, 0)
        for cyc in range(1, 80):
            if kind == "z" and not reset_after and ctx.get(dut.z_wr[last_lane].en):
                seen.setdefault(kind, cyc)
                assert ctx.get(dut.rz_done)
            if kind == "n" and ctx.get(dut.st_wr[last_lane].en):
                seen.setdefault(kind, cyc)
                assert ctx.get(dut.n_done)
            if kind == "head" and ctx.get(dut.head_done):
                seen.setdefault(kind, cyc)
            await ctx.tick()

    async def bench(ctx):
        for kind in (("n", "head") if reset_after else ("z", "n", "head")):
            await one(ctx, kind)

    _run(dut, bench, 400)
    want = {"n": lat.n, "head": lat.head}
    if not reset_after:
        want["z"] = lat.rz
    assert seen == want


# ---- whole cores: exact against golden, cycles equal the schedule ------------------------------
def _check(qm, lanes, profile, *, sequence, keep_state, backpressure, seed=0, n_seq=3, t_max=4):
    rng = np.random.default_rng(seed)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (n_seq, t_max, qm.input_size))
    lengths = rng.integers(1, t_max + 1, n_seq)
    lengths[0] = t_max
    vp = rp = None
    if backpressure:
        vp = list(rng.random(23) < 0.6)
        rp = list(rng.random(17) < 0.5)
        vp[0] = rp[0] = True
    y, h, cycles = simulate(qm, xq, lengths, lanes=lanes, sequence=sequence,
                            keep_state=keep_state, valid_pattern=vp, ready_pattern=rp,
                            profile=profile)
    gold = int_forward_q(qm, xq, lengths, sequence=sequence, keep_state=keep_state)
    np.testing.assert_array_equal(y, gold.y)
    if sequence:
        np.testing.assert_array_equal(h, gold.h)
    if not backpressure:
        sch = Schedule(qm, lanes, profile=profile)
        assert list(cycles) == sch.run(lengths)
        assert cycles[0] == sch.cycles_per_sequence(int(lengths[0]))


# (profile, reset_after, hidden, head, lanes, sequence, keep_state, backpressure): lanes a
# multiple of 3 (aligned beats) and not (groups start inside a beat), 1-2 layers, head or not
CORES = [
    ("dsp-k3", True, [4], 2, 3, False, False, False),
    ("dsp-k3", True, [5], None, 4, True, False, False),
    ("dsp-k3", True, [3, 4], 2, 12, True, True, True),
    ("dsp-k3", True, [5, 3], 3, 7, False, True, True),
    ("dsp-k3", False, [4], 2, 6, True, False, False),
    ("dsp-k3", False, [5, 3], 3, 5, False, True, False),
    ("dsp-k3", False, [4, 4], None, 9, True, True, True),
    ("dsp-k3", False, [6], 2, 2, False, False, True),
    ("dsp-k6", True, [5, 4], 3, 6, True, False, False),
    ("dsp-k6", True, [7], None, 21, False, True, True),
    ("dsp-k6", False, [5], 2, 9, False, True, False),
    ("dsp-k6", False, [3, 5], None, 4, True, False, True),
    ("lut-k3", False, [4, 3], 2, 5, True, False, False),
    ("seq-k3", True, [4], 2, 6, True, True, False),
]


@pytest.mark.parametrize("profile,reset_after,hidden,head,lanes,sequence,keep_state,bp", CORES)
def test_core_exact_and_on_schedule(profile, reset_after, hidden, head, lanes, sequence,
                                    keep_state, bp):
    qm = _qm(len(hidden) + lanes, 3, hidden, reset_after=reset_after, head=head)
    _check(qm, lanes, profile, sequence=sequence, keep_state=keep_state, backpressure=bp,
           seed=lanes)


def test_example_model_at_96_lanes():
    """The issue's example (12-32-9, reset_after) at 96 lanes: K = 3 and 6 exact, on schedule."""
    from gru_hw.importers import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "gru_hw" / "data" /
                       "japanese_vowels_gru.pt")
    qm = quantize_model(model, choose_spec(model))
    for k, cps in ((3, 96), (6, 80)):
        assert Schedule(qm, 96, profile=f"dsp-k{k}").cycles_per_step == cps
        _check(qm, 96, f"dsp-k{k}", sequence=False, keep_state=False, backpressure=False,
               n_seq=2, t_max=3)


def test_runtime_weights_with_a_wide_tail():
    """The bias memory's map does not change with K: a model loaded at run time is exact."""
    qa = _qm(3, 3, [5, 4], reset_after=False, head=2)
    qb = quantize_model(random_model(np.random.default_rng(4), 3, [5, 4], reset_after=False,
                                     head=2), qa.spec)
    assert (CoreConfig(qa, 5, "dsp-k3", runtime_weights=True).memory_map.to_json()
            == CoreConfig(qa, 5, runtime_weights=True).memory_map.to_json())
    rng = np.random.default_rng(2)
    f = qa.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (2, 3, 3))
    lengths = np.array([3, 2])
    y, h, _ = simulate(qa, xq, lengths, lanes=5, sequence=True, runtime_weights=True,
                       init_weights=False, load=qb, profile="dsp-k3")
    g = int_forward_q(qb, xq, lengths, sequence=True)
    np.testing.assert_array_equal(h, g.h)
    np.testing.assert_array_equal(y, g.y)


# ---- the generated Verilog in Verilator ----------------------------------------------------------
@pytest.fixture(scope="module")
def sim_root(request, tmp_path_factory):
    return build_root(request.config, tmp_path_factory)


@pytest.mark.parametrize("reset_after,hidden,head,lanes", [(False, [6, 5], 3, 5),
                                                          (True, [6], 2, 6)])
def test_verilator_wide_tail_exact_with_backpressure(reset_after, hidden, head, lanes,
                                                      sim_root, tmp_path):
    """A K = 3 core in Verilator: exact with idle input cycles and output backpressure, and
    (without them) its cycles are the schedule's."""
    require_tool("verilator")
    qm = _qm(8, 4, hidden, reset_after=reset_after, head=head)
    rng = np.random.default_rng(9)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (4, 5, 4))
    lengths = np.array([5, 2, 4, 1])
    g = int_forward_q(qm, xq, lengths, sequence=True)
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, sequence=True,
                  build_root=sim_root, test_dir=tmp_path / "bp", profile="dsp-k3",
                  options={"idle": [0, 0, 1, 0, 1], "backpressure": {"random": 0.4, "seed": 3}})
    assert res["match"], res["mismatch"]
    assert res["spec_json"]["profile"]["tail_width"] == 3
    np.testing.assert_array_equal(res["h"], g.h)
    np.testing.assert_array_equal(res["y"], g.y)
    free = rtl_run(qm, xq, lengths, simulator="verilator", lanes=lanes, sequence=True,
                   build_root=sim_root, test_dir=tmp_path / "free", profile="dsp-k3")
    assert free["match"], free["mismatch"]
    sch = Schedule(qm, lanes, profile="dsp-k3")
    assert free["cycles"].tolist() == [sch.cycles_per_sequence(int(t)) for t in lengths]


# ---- the board: UART link, host code, run-time weights over the line ---------------------------
def test_board_with_a_wide_tail_runs_and_loads_weights():
    """A BoardTop whose core has tail width 3 (lanes 4: groups start inside beats): sequences
    through the host's code equal golden; a model loaded over the UART (the host's weight map,
    made without the profile) is exact too."""
    from gru_hw import link
    from gru_hw.boards.sim import run_board_sim
    from gru_hw.boards.top import BoardTop

    qa = _qm(7, 3, [4], reset_after=True, head=2, bits=(8, 10))
    qb = quantize_model(random_model(np.random.default_rng(21), 3, [4], head=2), qa.spec)
    rng = np.random.default_rng(4)
    f = qa.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (3, 4, 3))
    lengths = np.array([4, 1, 3])
    top = BoardTop(qa, 4, None, divisor=4, timeout_cycles=600, max_steps=8,
                   runtime_weights=True, profile="dsp-k3")
    assert top.core.config.profile.tail_width == 3

    def host(port):
        ya = [link.BoardClient(port, expect=qa).run_sequence(xq[n, :lengths[n]]).y
              for n in range(len(xq))]
        cb = link.BoardClient(port, expect=qb, loading=True)
        cb.load_weights(qb)
        yb = [cb.run_sequence(xq[n, :lengths[n]]).y for n in range(len(xq))]
        return np.stack(ya), np.stack(yb)

    ya, yb = run_board_sim(top, 4, host, timeout_cycles=12000)
    np.testing.assert_array_equal(ya, int_forward_q(qa, xq, lengths).y)
    np.testing.assert_array_equal(yb, int_forward_q(qb, xq, lengths).y)
