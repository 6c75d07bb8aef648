"""Pipelined piecewise-linear sigmoid / tanh unit, bit-exact with :class:`gru_hw.activations.PWLTable`."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..activations import PWLTable
from ..schedule import MUL_LATENCY
from .arith import delay, mul_pipe

__all__ = ["PWLUnit"]


class PWLUnit(wiring.Component):
    """Evaluate a PWL sigmoid or tanh exactly as ``PWLTable.eval_int``.

    Ports: ``i`` (in, ``signed(in_fmt.width)``), ``v`` (in: ``i`` holds a value; only used by
    ``mul="seq"``, whose inputs must come at least MUL_LATENCY["seq"] cycles apart),
    ``o`` (out, ``signed(out_fmt.width)``).
    Latency ``4 + MUL_LATENCY[mul]`` cycles (segment/offset split and table read; slope * offset;
    intercept add; round and clamp; mirror), one value per cycle. The tables are read-only
    memories of ``segments_per_half`` entries (block RAM or logic, as synthesis decides).

    Stages, for ``a`` on ``i`` in cycle 0:
      0: neg = a < 0, m = |a|, k = m >> s, d = m mod 2**s, inside = k < S; table address k
      1: slope[k] * d                                  (mul stages)
      1+M: acc = icpt[k] << (F - fc) + product
      2+M: y = round_half_up(acc >> (F - fo)), clamped to [0, 2**fo - 1]; clamp_value outside
      3+M: out = y, or (2**fo - y | -y) for negative inputs;   registered at 4+M
    """

    def __init__(self, table: PWLTable, mul: str = "dsp") -> None:
        self.table = table
        self.mul = mul
        spec = table.spec
        super().__init__({"i": In(signed(spec.in_fmt.width)), "v": In(1),
                          "o": Out(signed(spec.out_fmt.width))})

    @property
    def latency(self) -> int:
        """Cycles from ``i`` to ``o``."""
        return 4 + MUL_LATENCY[self.mul]

    def elaborate(self, platform):
        m = Module()
        t = self.table
        spec = t.spec
        s = spec.offset_bits
        segs = spec.segments_per_half
        fo = spec.out_fmt.frac_bits
        big_f = spec.product_frac
        ml = MUL_LATENCY[self.mul]

        a = self.i
        neg = a < 0
        mag = Signal(unsigned(spec.in_fmt.width), name="mag")
        m.d.comb += mag.eq(Mux(neg, -a, a))
        k = mag >> s
        inside = k < segs

        m.submodules.slope_rom = slope_rom = Memory(
            shape=signed(t.slope_bits), depth=segs, init=[int(v) for v in t.slope])
        m.submodules.icpt_rom = icpt_rom = Memory(
            shape=signed(t.icpt_bits), depth=segs, init=[int(v) for v in t.icpt])
        rs = slope_rom.read_port()
        ri = icpt_rom.read_port()
        if segs > 1:
            kk = Mux(inside, k, 0)
            m.d.comb += [rs.addr.eq(kk), ri.addr.eq(kk)]

        neg1 = Signal(name="neg1")
        in1 = Signal(name="inside1")
        m.d.sync += [neg1.eq(neg), in1.eq(inside)]
        if s > 0:
            d1 = Signal(unsigned(s), name="d1")
            m.d.sync += d1.eq(mag[:s])
            v1 = Signal(name="v1")
            m.d.sync += v1.eq(self.v)
            prod = mul_pipe(m, rs.data, d1, self.mul, "slope_d", v1)
        else:
            prod = Signal(signed(2), name="prod0")  # no offset bits: the product is always 0
        icpt_d = delay(m, ri.data, ml, "icpt")
        neg_d = delay(m, neg1, ml, "neg")
        in_d = delay(m, in1, ml, "inside")

        acc = Signal(signed(max(t.icpt_bits + big_f - spec.icpt_frac, prod.shape().width) + 1),
                     name="acc")
        m.d.sync += acc.eq((icpt_d << (big_f - spec.icpt_frac)) + prod)
        neg2 = delay(m, neg_d, 1, "neg2")
        in2 = delay(m, in_d, 1, "in2")

        sh = big_f - fo
        y_expr = (acc + (1 << (sh - 1))) >> sh if sh > 0 else acc
        top = (1 << fo) - 1
        y_expr = Mux(y_expr < 0, 0, Mux(y_expr > top, top, y_expr))
        y = Signal(unsigned(max(fo, 1) + 1), name="y")
        m.d.sync += y.eq(Mux(in2, y_expr, t.clamp_value))
        neg3 = delay(m, neg2, 1, "neg3")

        out = Signal(signed(spec.out_fmt.width), name="out")
        if spec.func == "sigmoid":
            m.d.sync += out.eq(Mux(neg3, (1 << fo) - y, y))
        else:
            m.d.sync += out.eq(Mux(neg3, -y, y))
        m.d.comb += self.o.eq(out)
        return m
