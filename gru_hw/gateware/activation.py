"""Pipelined piecewise-linear sigmoid / tanh unit, bit-exact with :class:`gru_hw.activations.PWLTable`."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..activations import PWLTable
from ..fixed import bits_for_int_range
from .arith import MUL_LATENCY, delay, mul_pipe

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
      0: neg = a < 0; k = |a| >> s and d = |a| mod 2**s without negating a (see elaborate);
         inside = k < S; tables read at k - c (c: a < 0 with zero offset bits)
      1: slope * d                                     (mul stages)
      1+M: acc = icpt[k] << (F - fc) + product  (+ the rounding half, folded into the table)
      2+M: y = acc >> (F - fo), clamped to [0, 2**fo - 1] by bit tests; clamp_value outside
      3+M: out = y, or (2**fo - y | -y) for negative inputs;   registered at 4+M
    """

    def __init__(self, table: PWLTable, mul: str = "dsp") -> None:
        self.table = table
        self.mul = mul
        spec = table.spec
        super().__init__({"i": In(signed(spec.in_fmt.width)), "v": In(1),
                          "o": Out(signed(spec.out_fmt.width))})

    @staticmethod
    def latency_of(mul: str) -> int:
        """Cycles from ``i`` to ``o`` of a unit whose slope multiplier is of kind ``mul``."""
        return 4 + MUL_LATENCY[mul]

    @property
    def latency(self) -> int:
        """Cycles from ``i`` to ``o``."""
        return self.latency_of(self.mul)

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
        width = spec.in_fmt.width
        # Segment index without negating a first (no carry chain in front of the table read):
        # for a < 0, |a| = ~a + 1, so k = (~a >> s) + c with the carry c = 1 exactly when the
        # s offset bits of a are all zero, and then d = -a mod 2**s = 0. The tables are read at
        # hx = k - c: the slope does not matter when c = 1 (d = 0), and the intercept is read
        # from a second table shifted by one entry, chosen by c after the read.
        neg = a[-1]
        lo = a.as_unsigned()[:s]
        hx = Signal(unsigned(width - s), name="hx")
        m.d.comb += hx.eq(a.as_unsigned()[s:] ^ neg.replicate(width - s))
        c = neg & (lo == 0) if s > 0 else neg
        inside = (hx < segs) & ~(c & (hx == segs - 1))

        # The rounding half of the last stage is added here, into the intercept words (or as a
        # bit below them), so that the round-and-clamp stage has no adder.
        si = big_f - spec.icpt_frac
        sh = big_f - fo
        icpt_words = [int(v) for v in t.icpt]
        icpt_or = 0
        if sh > 0 and sh - 1 >= si:
            icpt_words = [v + (1 << (sh - 1 - si)) for v in icpt_words]
        elif sh > 0:
            icpt_or = 1 << (sh - 1)
        ib = max(bits_for_int_range(min(icpt_words), max(icpt_words)), 2)
        m.submodules.slope_rom = slope_rom = Memory(
            shape=signed(t.slope_bits), depth=segs, init=[int(v) for v in t.slope])
        m.submodules.icpt_rom = icpt_rom = Memory(shape=signed(ib), depth=segs, init=icpt_words)
        m.submodules.icpt_rom1 = icpt_rom1 = Memory(
            shape=signed(ib), depth=segs, init=icpt_words[1:] + icpt_words[-1:])
        rs = slope_rom.read_port()
        ri0 = icpt_rom.read_port()
        ri1 = icpt_rom1.read_port()
        if segs > 1:
            # outside the table the words read are not used (the clamp value is)
            m.d.comb += [rs.addr.eq(hx), ri0.addr.eq(hx), ri1.addr.eq(hx)]
        c1 = Signal(name="c1")
        m.d.sync += c1.eq(c)
        icpt1 = Signal(signed(ib), name="icpt1")
        m.d.comb += icpt1.eq(Mux(c1, ri1.data, ri0.data))

        neg1 = Signal(name="neg1")
        in1 = Signal(name="inside1")
        m.d.sync += [neg1.eq(neg), in1.eq(inside)]
        if s > 0:
            d1 = Signal(unsigned(s), name="d1")
            m.d.sync += d1.eq(Mux(neg, -lo, lo))
            v1 = Signal(name="v1")
            m.d.sync += v1.eq(self.v)
            prod = mul_pipe(m, rs.data, d1, self.mul, "slope_d", v1)
        else:
            prod = Signal(signed(2), name="prod0")  # no offset bits: the product is always 0
        icpt_d = delay(m, icpt1, ml, "icpt")
        neg_d = delay(m, neg1, ml, "neg")
        in_d = delay(m, in1, ml, "inside")

        icpt_t = icpt_d << si
        if icpt_or:
            icpt_t = icpt_t | icpt_or  # below the intercept's lowest bit: no carry
        acc = Signal(signed(max(ib + si, prod.shape().width) + 1), name="acc")
        m.d.sync += acc.eq(icpt_t + prod)
        neg2 = delay(m, neg_d, 1, "neg2")
        in2 = delay(m, in_d, 1, "in2")

        # round (the half is already in acc) and clamp to [0, 2**fo - 1] with bit tests only
        y_raw = acc >> sh if sh > 0 else acc
        top = (1 << fo) - 1
        below = y_raw[-1]
        above = ~below & (y_raw.as_unsigned()[fo:] != 0)
        y_expr = Mux(below, 0, Mux(above, top, y_raw.as_unsigned()[:fo]))
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
