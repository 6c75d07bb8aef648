"""Unit tests of the gateware building blocks against the NumPy definitions (bit-exact)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from gru_hw.activations import default_pwl_spec, design_pwl
from gru_hw.fixed import Overflow, QFormat, Rounding, requantize
from gru_hw.gateware import PWLUnit, Requantizer, TailMultiplier


def run_pipe(dut, inputs: list[tuple], latency: int) -> list[int]:
    """Drive ``inputs`` (tuples of (port, value) lists) one per cycle; collect ``dut.o``-like out."""
    outs: list[int] = []

    async def bench(ctx):
        n = len(inputs)
        for cyc in range(n + latency):
            if cyc < n:
                for port, val in inputs[cyc][0]:
                    ctx.set(port, val)
            if cyc >= latency:
                outs.append(ctx.get(inputs[0][1]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("ovf", list(Overflow))
@pytest.mark.parametrize("from_frac,fmt", [(12, QFormat(3, 5)), (4, QFormat(2, 6)), (7, QFormat(4, 7))])
def test_requantizer_matches_fixed(rounding, ovf, from_frac, fmt):
    width = 14
    dut = Requantizer(width, from_frac, fmt, rounding, ovf)
    rng = np.random.default_rng(1)
    vals = np.concatenate([np.arange(-300, 300), rng.integers(-(1 << 13), 1 << 13, 400)])
    got = run_pipe(dut, [([(dut.i, int(v))], dut.o) for v in vals], dut.latency)
    want, _ = requantize(vals.astype(np.int64), from_frac, fmt, rounding, ovf)
    assert got == [int(v) for v in want]


@pytest.mark.parametrize("kind", ["dsp", "lut"])
def test_tail_multiplier(kind):
    from amaranth.hdl import signed, unsigned

    dut = TailMultiplier(signed(9), signed(7), kind)
    rng = np.random.default_rng(2)
    a = rng.integers(-256, 256, 300)
    b = rng.integers(-64, 64, 300)
    a[:4] = [-256, -256, 255, 0]
    b[:4] = [-64, 63, -64, -64]
    got = run_pipe(dut, [([(dut.a, int(x)), (dut.b, int(y))], dut.p) for x, y in zip(a, b)],
                   dut.latency)
    assert got == [int(x) * int(y) for x, y in zip(a, b)]


@pytest.mark.parametrize("func", ["sigmoid", "tanh"])
@pytest.mark.parametrize("act_bits,seg", [(10, 5), (8, 3), (12, 0)])
@pytest.mark.parametrize("mul", ["dsp", "lut"])
def test_pwl_unit_exhaustive(func, act_bits, seg, mul):
    in_fmt = QFormat(5, act_bits - 1)
    out_fmt = QFormat(1, act_bits - 1)
    table = design_pwl(default_pwl_spec(func, in_fmt, out_fmt, seg_log2=seg))
    dut = PWLUnit(table, mul)
    a = np.arange(in_fmt.min_int, in_fmt.max_int + 1, dtype=np.int64)
    if a.size > 6000:  # keep it quick: every value near zero and the ends, a sample elsewhere
        rng = np.random.default_rng(3)
        a = np.unique(np.concatenate([a[:500], a[-500:], np.arange(-2000, 2000),
                                      rng.choice(a, 2000)]))
    got = run_pipe(dut, [([(dut.i, int(v))], dut.o) for v in a], dut.latency)
    assert got == [int(v) for v in table.eval_int(a)]


def test_tail_multiplier_seq():
    """The sequential multiplier: operands on ``start``, product MUL_LATENCY cycles later, held."""
    from amaranth.hdl import signed, unsigned

    from gru_hw.gateware.arith import MUL_LATENCY

    lat = MUL_LATENCY["seq"]
    for a_shape, b_shape in [(signed(9), signed(7)), (signed(16), signed(17)), (signed(12), unsigned(3)),
                             (unsigned(5), unsigned(1))]:
        dut = TailMultiplier(a_shape, b_shape, "seq")
        rng = np.random.default_rng(4)
        lo_a, hi_a = (-(1 << (a_shape.width - 1)), 1 << (a_shape.width - 1)) if a_shape.signed \
            else (0, 1 << a_shape.width)
        lo_b, hi_b = (-(1 << (b_shape.width - 1)), 1 << (b_shape.width - 1)) if b_shape.signed \
            else (0, 1 << b_shape.width)
        a = [lo_a, hi_a - 1, lo_a, 0] + list(rng.integers(lo_a, hi_a, 60))
        b = [lo_b, lo_b, hi_b - 1, lo_b] + list(rng.integers(lo_b, hi_b, 60))
        gaps = [lat + int(g) for g in rng.integers(0, 3, len(a))]
        got = []

        async def bench(ctx):
            for x, y, gap in zip(a, b, gaps):
                ctx.set(dut.a, int(x))
                ctx.set(dut.b, int(y))
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                ctx.set(dut.a, 0)
                ctx.set(dut.b, 0)
                for _ in range(lat - 1):
                    await ctx.tick()
                got.append(ctx.get(dut.p))
                for _ in range(gap - lat):
                    await ctx.tick()
                    assert ctx.get(dut.p) == got[-1]

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        assert got == [int(x) * int(y) for x, y in zip(a, b)]
