"""Small arithmetic building blocks shared by the gateware: requantizers, multipliers, delays.

Every block here computes exactly what :mod:`gru_hw.fixed` computes in NumPy. Signals are plain
``signed(n)`` values; the fixed-point format is tracked in Python.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import Overflow, QFormat, Rounding

__all__ = ["shift_round", "overflow", "rq_pipe", "mul_pipe", "delay", "delay_ram", "Requantizer",
           "TailMultiplier", "RQ_LATENCY", "MUL_LATENCY", "SEQ_STEPS"]

#: Register stages of a requantizer (round, then overflow): :attr:`Requantizer.latency`.
RQ_LATENCY = 2
#: Cycles per product of the sequential ("seq") multiplier: a quarter of the partial products of
#: "lut" per cycle, so the tail that uses it takes one emitted row per SEQ_STEPS cycles.
SEQ_STEPS = 4
#: Register stages of a tail multiplier by kind (:attr:`TailMultiplier.latency`). "seq" takes one
#: more than SEQ_STEPS: the partial product a * chunk is registered before it is accumulated.
MUL_LATENCY = {"dsp": 2, "lut": 2, "seq": SEQ_STEPS + 1}


def shift_round(v: Value, shift: int, rounding: Rounding) -> Value:
    """Return ``v / 2**shift`` rounded like :func:`gru_hw.fixed.shift_round` (shift may be <= 0)."""
    if shift <= 0:
        return v << (-shift)
    if rounding is Rounding.TRUNCATE:
        return v >> shift
    half = 1 << (shift - 1)
    q = (v + half) >> shift
    if rounding is Rounding.HALF_UP:
        return q
    # Half to even: where the dropped bits were exactly one half and q came out odd, step back.
    tie = v.as_unsigned()[:shift] == half
    return q - (tie & q[0])


def overflow(q: Value, fmt: QFormat, mode: Overflow) -> Value:
    """Return ``q`` brought into ``fmt`` (saturated or wrapped), as ``signed(fmt.width)``."""
    if mode is Overflow.SATURATE:
        q = q if q.shape().signed else Cat(q, Const(0, 1)).as_signed()
        w = q.shape().width
        if w > fmt.width:
            # out of range <=> the bits from fmt.width - 1 up are not all copies of the sign
            # (bit tests, not two magnitude comparisons: no carry chains)
            hi = q.as_unsigned()[fmt.width - 1:]
            over = ~q[-1] & (hi != 0)
            under = q[-1] & (hi != (1 << (w - fmt.width + 1)) - 1)
            q = Mux(over, fmt.max_int, Mux(under, fmt.min_int, q[: fmt.width].as_signed()))
    return q.as_signed()[: fmt.width].as_signed()


def rq_pipe(m: Module, v: Value, from_frac: int, fmt: QFormat, rounding: Rounding,
            ovf: Overflow, name: str) -> Signal:
    """Requantize ``v`` (``from_frac`` fraction bits) to ``fmt`` in RQ_LATENCY = 2 register stages."""
    q_expr = shift_round(v, from_frac - fmt.frac_bits, rounding)
    q = Signal(q_expr.shape(), name=f"{name}_q")
    out = Signal(signed(fmt.width), name=f"{name}_o")
    m.d.sync += [q.eq(q_expr), out.eq(overflow(q, fmt, ovf))]
    assert RQ_LATENCY == 2
    return out


def _lut_product_terms(a: Value, b: Value) -> list[Value]:
    """Partial products of a*b as shifted, gated copies of a (no ``*`` operator)."""
    bs = b.shape()
    terms = []
    for i in range(bs.width):
        t = Mux(b[i], a.as_signed() << i, 0)
        if bs.signed and i == bs.width - 1:
            t = -t  # two's complement: the sign bit weighs -2**(n-1)
        terms.append(t)
    return terms


def _tree_sum(terms: list[Value]) -> Value:
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def mul_pipe(m: Module, a: Value, b: Value, kind: str, name: str, start=None) -> Signal:
    """Return the registered product a*b after MUL_LATENCY[kind] cycles.

    ``kind="dsp"``: ``*`` in two register stages (synthesis maps it to DSP blocks).
    ``kind="lut"``: shift-and-add partial products over the bits of ``b`` (pass the narrower
    operand as ``b``), summed in two register stages, so that synthesis keeps it in logic.
    ``kind="seq"``: sequential: ``start`` marks the cycle the operands are valid; ``b`` is cut
    into SEQ_STEPS chunks, most significant (signed) first; a * chunk is registered, then
    acc = (acc << k) + a * chunk once per cycle; the product is valid SEQ_STEPS + 1 cycles after
    ``start`` and held until the cycle after the next start, which must come at least SEQ_STEPS
    cycles later.
    """
    sa, sb = a.shape(), b.shape()
    width = sa.width + sb.width + 1
    out = Signal(signed(width), name=f"{name}_p")
    if kind == "seq":
        steps = SEQ_STEPS
        assert MUL_LATENCY["seq"] == steps + 1
        bw = sb.width + (0 if sb.signed else 1)
        k = -(-bw // steps)
        bs = Signal(signed(k * steps), name=f"{name}_bs")
        m.d.comb += bs.eq(b)
        aw = sa.width + (0 if sa.signed else 1)
        av = Signal(signed(aw), name=f"{name}_av")
        m.d.comb += av.eq(a)
        a_r = Signal(signed(aw), name=f"{name}_a", reset_less=True)
        # the chunks still to multiply, next one in the top k bits (a shift register, no mux)
        rest = Signal(unsigned(max(k * (steps - 1), 1)), name=f"{name}_b", reset_less=True)
        pp = Signal(signed(aw + k + 1), name=f"{name}_pp", reset_less=True)  # a * chunk
        fix = Signal(name=f"{name}_fix", reset_less=True)
        i = Signal(range(steps + 2), name=f"{name}_i", init=steps + 1)
        first = Signal(name=f"{name}_first")

        # The top chunk is signed: its sign bit weighs -2**(k-1). a * -bit is taken as
        # bit * ~a + bit (no negation in front of the adders); the + bit (``fix``, at weight
        # 2**(k-1)) goes into the low bits of the first accumulation, which are free.
        top_chunk = bs[k * (steps - 1):]
        terms0 = [Mux(top_chunk[j], av << j, 0) for j in range(k - 1)]
        terms0.append(Mux(top_chunk[k - 1], ~av << (k - 1), 0))
        chunk = rest[-k:]
        terms = [Mux(chunk[j], a_r << j, 0) for j in range(k)]

        # cycle 0 (start): pp = a * top chunk; cycles 1..steps-1: pp = a * next chunk;
        # cycles 1..steps: out = pp (first), then (out << k) + pp. Valid steps + 1 cycles after
        # start and held until the cycle after the next start.
        m.d.sync += first.eq(start)
        with m.If(start):
            m.d.sync += [pp.eq(_tree_sum(terms0)), fix.eq(top_chunk[k - 1]),
                         a_r.eq(av), rest.eq(bs[:k * (steps - 1)]), i.eq(1)]
        with m.Elif(i != steps + 1):
            m.d.sync += [pp.eq(_tree_sum(terms)), rest.eq(rest << k), i.eq(i + 1)]
        with m.If(i != steps + 1):
            m.d.sync += out.eq(Mux(first, fix << (k - 1), out << k) + pp)
        return out
    if kind == "dsp":
        assert MUL_LATENCY["dsp"] == 2
        # Two registered stages: partial products, then their sum. A product wider than one
        # hard multiplier (18 x 18) is split at b's bit 17 so that the adder joining the two
        # hard multipliers' halves gets a stage of its own (on ECP5 it followed the multipliers).
        if sb.width > 18 and sa.width <= 18:
            lo_w = 17
            p_lo = Signal(signed(sa.width + lo_w + 1), name=f"{name}_plo", reset_less=True)
            p_hi = Signal(signed(sa.width + sb.width - lo_w + 1), name=f"{name}_phi",
                          reset_less=True)
            m.d.sync += [p_lo.eq(a * b.as_unsigned()[:lo_w]), p_hi.eq(a * (b >> lo_w))]
            m.d.sync += out.eq((p_hi << lo_w) + p_lo)
        else:
            p1 = Signal(signed(width), name=f"{name}_p1", reset_less=True)
            m.d.sync += [p1.eq(a * b), out.eq(p1)]
        return out
    assert kind == "lut" and MUL_LATENCY["lut"] == 2
    terms = _lut_product_terms(a, b)
    half = (len(terms) + 1) // 2
    lo = Signal(signed(width), name=f"{name}_lo")
    hi = Signal(signed(width), name=f"{name}_hi")
    m.d.sync += [lo.eq(_tree_sum(terms[:half])),
                 hi.eq(_tree_sum(terms[half:]) if len(terms) > half else 0),
                 out.eq(lo + hi)]
    return out


def delay_ram(m: Module, v: Value, n: int, name: str) -> Value:
    """Return ``v`` delayed by ``n`` cycles through a circular buffer in a memory (block RAM).

    For long, wide delay lines on iCE40, where every flip-flop of a register chain costs a whole
    logic cell: write ``v`` every cycle at a free-running pointer, read n - 1 words behind it.
    """
    if n < 3:
        return delay(m, v, n, name)
    from amaranth.lib.memory import Memory

    depth = 1 << n.bit_length()
    mem = Memory(shape=v.shape(), depth=depth, init=[])
    m.submodules[f"{name}_dl"] = mem
    wp = Signal(range(depth), name=f"{name}_wp")
    m.d.sync += wp.eq(wp + 1)
    w, r = mem.write_port(), mem.read_port()
    m.d.comb += [w.addr.eq(wp), w.data.eq(v), w.en.eq(1), r.addr.eq(wp - (n - 1))]
    return r.data


def delay(m: Module, v: Value, n: int, name: str) -> Value:
    """Return ``v`` delayed by ``n`` register stages (``v`` itself for n = 0)."""
    for i in range(n):
        r = Signal(v.shape(), name=f"{name}_d{i + 1}")
        m.d.sync += r.eq(v)
        v = r
    return v


class Requantizer(wiring.Component):
    """Requantize an integer with ``from_frac`` fraction bits to ``fmt``.

    Ports: ``i`` (in, ``signed(in_width)``), ``o`` (out, ``signed(fmt.width)``).
    Latency 2 cycles (round, then saturate/wrap), throughput one value per cycle.
    Exactly :func:`gru_hw.fixed.requantize`.
    """

    def __init__(self, in_width: int, from_frac: int, fmt: QFormat,
                 rounding: Rounding = Rounding.HALF_UP, ovf: Overflow = Overflow.SATURATE) -> None:
        self.in_width = in_width
        self.from_frac = from_frac
        self.fmt = fmt
        self.rounding = rounding
        self.ovf = ovf
        super().__init__({"i": In(signed(in_width)), "o": Out(signed(fmt.width))})

    @property
    def latency(self) -> int:
        """Cycles from ``i`` to ``o``."""
        return RQ_LATENCY

    def elaborate(self, platform):
        m = Module()
        out = rq_pipe(m, self.i, self.from_frac, self.fmt, self.rounding, self.ovf, "rq")
        m.d.comb += self.o.eq(out)
        return m


class TailMultiplier(wiring.Component):
    """A pipelined multiplier as used in the tail. Ports ``a``, ``b`` (in), ``p`` (out).

    Latency MUL_LATENCY[kind] cycles, one product per cycle ("seq": one product per SEQ_STEPS
    cycles, operands marked by the ``start`` input).
    """

    def __init__(self, a_shape: Shape, b_shape: Shape, kind: str = "dsp") -> None:
        self.kind = kind
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "start": In(1),
                          "p": Out(signed(a_shape.width + b_shape.width + 1))})

    @property
    def latency(self) -> int:
        """Cycles from the operands to the product."""
        return MUL_LATENCY[self.kind]

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(mul_pipe(m, self.a, self.b, self.kind, "mul", self.start))
        return m
