"""Slow, obviously-correct references shared by the tests (Python integers and Fractions)."""

from __future__ import annotations

import math
from fractions import Fraction

from gru_hw.fixed import Overflow, QFormat, Rounding


def slow_round(value: Fraction, rounding: Rounding) -> int:
    """Round an exact rational to an integer by the definition of each mode."""
    floor = math.floor(value)
    rest = value - floor
    if rounding is Rounding.TRUNCATE:
        return floor
    if rest != Fraction(1, 2):
        return floor + (1 if rest > Fraction(1, 2) else 0)
    if rounding is Rounding.HALF_UP:
        return floor + 1
    return floor if floor % 2 == 0 else floor + 1


def slow_overflow(v: int, fmt: QFormat, overflow: Overflow) -> tuple[int, bool]:
    lo, hi = -(2 ** (fmt.width - 1)), 2 ** (fmt.width - 1) - 1
    if lo <= v <= hi:
        return v, False
    if overflow is Overflow.SATURATE:
        return min(max(v, lo), hi), True
    m = v % (2 ** fmt.width)
    return (m - 2 ** fmt.width if m > hi else m), True


def slow_to_fmt(value: Fraction, fmt: QFormat, rounding: Rounding, overflow: Overflow) -> tuple[int, bool]:
    """Requantize an exact real value to ``fmt`` (returns the integer and whether it overflowed)."""
    return slow_overflow(slow_round(value * Fraction(2) ** fmt.frac_bits, rounding), fmt, overflow)


def slow_pwl(table, a: int) -> int:
    """Scalar re-statement of the documented PWL evaluation."""
    s = table.spec
    m = abs(a)
    k = m >> s.offset_bits
    fo = s.out_fmt.frac_bits
    if k >= s.segments_per_half:
        y = table.clamp_value
    else:
        d = m - (k << s.offset_bits)
        exact = (Fraction(int(table.icpt[k]), 2**s.icpt_frac)
                 + Fraction(int(table.slope[k]) * d, 2 ** (s.slope_frac + s.in_fmt.frac_bits)))
        y = slow_round(exact * 2**fo, Rounding.HALF_UP)
        y = min(max(y, 0), 2**fo - 1)
    if a < 0:
        return 2**fo - y if s.func == "sigmoid" else -y
    return y


def slow_layer_step(qm, k: int, x_in: list[int], h: list[int], sats: dict[str, int]) -> list[int]:
    """One layer step with exact rationals: each named point rounds the exact real value."""
    spec = qm.spec
    q = qm.layers[k]
    lf = spec.layers[k]
    H = len(h)
    fin = spec.in_fmt(k).frac_bits
    fh = spec.h_fmt.frac_bits
    fg = spec.gate_fmt.frac_bits
    wi = Fraction(2) ** -lf.w_ih_fmt.frac_bits
    wh = Fraction(2) ** -lf.w_hh_fmt.frac_bits
    bi = Fraction(2) ** -spec.b_ih_fmt(k).frac_bits
    bh = Fraction(2) ** -spec.b_hh_fmt(k).frac_bits
    xv = [Fraction(v, 2**fin) for v in x_in]
    hv = [Fraction(v, 2**fh) for v in h]

    def point(name: str, value: Fraction, fmt: QFormat) -> int:
        mode = spec.mode(f"l{k}.{name}")
        v, over = slow_to_fmt(value, fmt, mode.rounding, mode.overflow)
        sats[f"l{k}.{name}"] = sats.get(f"l{k}.{name}", 0) + int(over)
        return v

    def dot_x(row: int) -> Fraction:
        return sum((int(q.w_ih[row, j]) * wi * xv[j] for j in range(len(xv))), Fraction(0)) + int(q.b_ih[row]) * bi

    def dot_h(row: int, vec: list[Fraction]) -> Fraction:
        return sum((int(q.w_hh[row, j]) * wh * vec[j] for j in range(H)), Fraction(0)) + int(q.b_hh[row]) * bh

    sig = spec.sigmoid_table()
    tnh = spec.tanh_table()
    r = [slow_pwl(sig, point("r", dot_x(j) + dot_h(j, hv), spec.preact_fmt)) for j in range(H)]
    z = [slow_pwl(sig, point("z", dot_x(H + j) + dot_h(H + j, hv), spec.preact_fmt)) for j in range(H)]
    rv = [Fraction(v, 2**fg) for v in r]
    if lf.hn_fmt is not None:
        hn = [point("hn", dot_h(2 * H + j, hv), lf.hn_fmt) for j in range(H)]
        pre = [dot_x(2 * H + j) + rv[j] * Fraction(hn[j], 2**lf.hn_fmt.frac_bits) for j in range(H)]
    else:
        rh = [point("rh", rv[j] * hv[j], spec.h_fmt) for j in range(H)]
        rhv = [Fraction(v, 2**fh) for v in rh]
        pre = [dot_x(2 * H + j) + dot_h(2 * H + j, rhv) for j in range(H)]
    n = [slow_pwl(tnh, point("n", pre[j], spec.preact_fmt)) for j in range(H)]
    nv = [Fraction(v, 2**fh) for v in n]
    zv = [Fraction(v, 2**fg) for v in z]
    return [point("h", nv[j] + zv[j] * (hv[j] - nv[j]), spec.h_fmt) for j in range(H)]
