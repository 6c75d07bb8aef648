"""Each core component's declared latency against simulation (the schedule adds these up).

The whole core's cycle counts are checked against the schedule in tests/test_gateware.py; here
every component is simulated on its own: an event goes in at a known cycle and the test measures
the cycle its effect comes out, which must equal the latency the component declares.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from gru_hw.config import CoreConfig
from gru_hw.gateware import ChainExit, Controller, MACLanes, StateMemories, Tail
from gru_hw.gateware.chain import KIND_HEAD, KIND_N, KIND_Z, ROWSET_CODE
from gru_hw.gateware.mac import tag_layout
from gru_hw.gateware.tail import TailLatency
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model

PROFILES = ["dsp", "lut", "seq"]


def _config(profile: str, *, reset_after: bool = True, lanes: int = 3) -> CoreConfig:
    model = random_model(np.random.default_rng(5), 3, [4], reset_after=reset_after, head=2)
    qm = quantize_model(model, choose_spec(model, 8, 8))
    return CoreConfig(qm, lanes, profile)


def _run(dut, bench, cycles: int = 200) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


@pytest.mark.parametrize("profile", PROFILES)
def test_controller_issue_latency(profile):
    cfg = _config(profile)
    dut = Controller(cfg)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.i_stream.payload, {"x": [1, 2, 3], "first": 1, "last": 1})
        for cyc in range(20):
            if ctx.get(dut.accept) and "accept" not in seen:
                seen["accept"] = cyc
            if ctx.get(dut.valid) and "valid" not in seen:
                seen["valid"] = cyc
            await ctx.tick()

    _run(dut, bench)
    assert seen["valid"] - seen["accept"] == Controller.ISSUE_LATENCY


@pytest.mark.parametrize("profile", PROFILES)
def test_mac_lanes_latency_and_products(profile):
    cfg = _config(profile)
    dut = MACLanes(cfg, tag_layout(cfg))
    words = cfg.memory_map.lane_words
    got = {}

    async def bench(ctx):
        ctx.set(dut.waddr, 5)           # issue cycle 0
        await ctx.tick()
        ctx.set(dut.valid, 1)           # operand stage, cycle 1
        ctx.set(dut.first, 1)
        ctx.set(dut.vec, -7)
        ctx.set(dut.tag.nrows, 3)
        await ctx.tick()
        ctx.set(dut.valid, 0)
        for cyc in range(2, 12):
            if ctx.get(dut.o_valid):
                got[cyc] = [ctx.get(dut.sums[p]) for p in range(cfg.lanes)]
                assert ctx.get(dut.o_tag.nrows) == 3
            await ctx.tick()

    _run(dut, bench)
    assert list(got) == [1 + MACLanes.LATENCY]
    assert got[1 + MACLanes.LATENCY] == [words[p][5] * -7 for p in range(cfg.lanes)]


@pytest.mark.parametrize("profile", PROFILES)
def test_chain_exit_latency_and_interval(profile):
    cfg = _config(profile)
    interval = Tail.interval_of(cfg.profile)
    dut = ChainExit(cfg, interval)
    emit = next(i for i, ph in enumerate(cfg.schedule.phases) if ph.emit and ph.rowset == "all")
    rows = []

    async def bench(ctx):
        ctx.set(dut.load, 1)
        ctx.set(dut.sums, [10, 20, 30])
        ctx.set(dut.tag, {"ph": emit, "fgroup": 1, "nrows": 3, "last": 1, "layer": 0,
                          "rowset": ROWSET_CODE["all"]})
        await ctx.tick()
        ctx.set(dut.load, 0)
        for cyc in range(1, 30):
            if ctx.get(dut.row.valid):
                rows.append((cyc, ctx.get(dut.row.kind), ctx.get(dut.row.j)))
            await ctx.tick()

    _run(dut, bench)
    assert [c for c, _, _ in rows] == [dut.latency + k * interval for k in range(3)]
    assert dut.latency == ChainExit.latency_of(cfg.profile) == 3 + cfg.profile.park_read_reg
    assert [k for _, k, _ in rows] == [0, 1, 2] and [j for _, _, j in rows] == [0, 0, 0]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("profile", PROFILES)
def test_tail_latencies(profile, reset_after):
    cfg = _config(profile, reset_after=reset_after)
    dut = Tail(cfg)
    lat = TailLatency(cfg.profile, reset_after)
    seen = {}
    kinds = {"z": KIND_Z, "n": KIND_N, "head": KIND_HEAD}

    async def one(ctx, kind):
        ctx.set(dut.row, {"valid": 1, "ax": 3, "ah": 5, "layer": 0, "kind": kinds[kind],
                          "j": 3 if kind != "head" else 1})
        await ctx.tick()
        ctx.set(dut.row.valid, 0)
        for cyc in range(1, 80):
            if kind == "z" and ctx.get(dut.z_wr.en):
                seen.setdefault(kind, cyc)
            if kind == "n" and ctx.get(dut.st_wr.en):
                seen.setdefault(kind, cyc)
                assert ctx.get(dut.n_done)  # unit 3 is the layer's last
            if kind == "head" and ctx.get(dut.head_done):
                seen.setdefault(kind, cyc)
            await ctx.tick()

    async def bench(ctx):
        for kind in kinds:
            await one(ctx, kind)

    _run(dut, bench, cycles=400)
    assert seen == {"z": lat.rz, "n": lat.n, "head": lat.head}


def test_state_memories_read_latency():
    cfg = _config("dsp")
    dut = StateMemories(cfg)
    got = []

    async def bench(ctx):
        ctx.set(dut.st_wr.addr, 6)
        ctx.set(dut.st_wr.data, -9)
        ctx.set(dut.st_wr.en, 1)
        await ctx.tick()
        ctx.set(dut.st_wr.en, 0)
        ctx.set(dut.vec_rd.addr, 6)
        for _ in range(3):
            got.append(ctx.get(dut.vec_rd.data))
            await ctx.tick()

    _run(dut, bench)
    assert got == [0, -9, -9]  # one cycle from address to data
