"""Fixed-point primitives against a slow exact reference (Python Fractions)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gru_hw.errors import GruHwError
from reference import slow_overflow, slow_round
from gru_hw.fixed import (
    Overflow, QFormat, Rounding, accumulator_bits, int_bits_for, quantize, requantize, shift_round,
)


def slow_requantize(v: int, from_frac: int, fmt: QFormat, rounding: Rounding, overflow: Overflow) -> int:
    exact = Fraction(v) * Fraction(2) ** (fmt.frac_bits - from_frac)
    return slow_overflow(slow_round(exact, rounding), fmt, overflow)[0]


formats = st.tuples(st.integers(-4, 12), st.integers(-4, 20)).filter(
    lambda t: 1 <= t[0] + t[1] <= 40).map(lambda t: QFormat(*t))


@settings(max_examples=max(400, settings.default.max_examples), deadline=None)
@given(
    v=st.lists(st.integers(-(2**44), 2**44), min_size=1, max_size=20),
    from_frac=st.integers(-4, 30),
    fmt=formats,
    rounding=st.sampled_from(Rounding),
    overflow=st.sampled_from(Overflow),
)
def test_requantize_matches_exact_reference(v, from_frac, fmt, rounding, overflow):
    got, nsat = requantize(np.array(v, dtype=np.int64), from_frac, fmt, rounding, overflow)
    want = [slow_requantize(x, from_frac, fmt, rounding, overflow) for x in v]
    assert got.tolist() == want
    rounded = [slow_round(Fraction(x) * Fraction(2) ** (fmt.frac_bits - from_frac), rounding) for x in v]
    assert nsat == sum(1 for r in rounded if not fmt.min_int <= r <= fmt.max_int)


def test_requantize_left_shift_does_not_wrap():
    """Gaining 24 fraction bits from ~2^43 used to wrap int64 and saturate to the wrong end."""
    v = np.array([8_796_093_022_078, -8_796_093_022_078, 0, 1, -1], dtype=np.int64)
    fmt = QFormat(2, 20)
    ends = {Overflow.SATURATE: [fmt.max_int, fmt.min_int],
            Overflow.WRAP: [0, 0]}  # wrap keeps the (zero) low 22 bits of v * 2**24
    for overflow, first_two in ends.items():
        got, n = requantize(v, -4, fmt, Rounding.HALF_UP, overflow)
        want = [slow_requantize(int(x), -4, fmt, Rounding.HALF_UP, overflow) for x in v]
        assert got.tolist() == want and n == 4  # 0 is the only value that fits
        assert want[:2] == first_two


def test_shift_round_left_shift_refuses_int64_overflow():
    with pytest.raises(OverflowError, match="exceeds int64"):
        shift_round(np.array([1 << 40]), -24, Rounding.HALF_UP)
    assert shift_round(np.array([-(1 << 39)]), -24, Rounding.HALF_UP).tolist() == [-(1 << 63)]


@settings(max_examples=max(300, settings.default.max_examples), deadline=None)
@given(v=st.integers(-(2**50), 2**50), shift=st.integers(0, 12), rounding=st.sampled_from(Rounding))
def test_shift_round_ties(v, shift, rounding):
    assert int(shift_round(np.array([v]), shift, rounding)[0]) == slow_round(Fraction(v, 2**shift), rounding)


def test_shift_round_known_ties():
    v = np.array([-3, -2, -1, 1, 2, 3, 5, -5])  # divided by 2: -1.5 -1 -0.5 0.5 1 1.5 2.5 -2.5
    assert shift_round(v, 1, Rounding.TRUNCATE).tolist() == [-2, -1, -1, 0, 1, 1, 2, -3]
    assert shift_round(v, 1, Rounding.HALF_UP).tolist() == [-1, -1, 0, 1, 1, 2, 3, -2]
    assert shift_round(v, 1, Rounding.HALF_EVEN).tolist() == [-2, -1, 0, 0, 1, 2, 2, -2]


@settings(max_examples=300, deadline=None)
@given(
    x=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=10),
    fmt=formats,
    rounding=st.sampled_from(Rounding),
    overflow=st.sampled_from(Overflow),
)
def test_quantize_matches_exact_reference(x, fmt, rounding, overflow):
    got, _ = quantize(np.array(x), fmt, rounding, overflow)
    want = [slow_overflow(slow_round(Fraction(v) * Fraction(2) ** fmt.frac_bits, rounding), fmt, overflow)[0]
            for v in x]
    assert got.tolist() == want


def test_qformat_properties_and_errors():
    f = QFormat(1, 7)
    assert (f.width, f.min_int, f.max_int, f.lsb) == (8, -128, 127, 1 / 128)
    assert f.max_value == 127 / 128 and f.min_value == -1.0
    assert str(f) == "Q1.7"
    assert QFormat.from_json([3, 5]) == QFormat(3, 5)
    with pytest.raises(GruHwError, match="width 0 < 1"):
        QFormat(2, -2)
    with pytest.raises(GruHwError, match=r"expected \[int_bits, frac_bits\]"):
        QFormat.from_json([1.5, 2], "qconfig.x_fmt")
    with pytest.raises(GruHwError, match="more than the 62 supported"):
        QFormat(40, 40)


@pytest.mark.parametrize("max_abs, bits", [(0.9, 1), (0.5, 1), (1.0, 2), (1.99, 2), (2.0, 3), (7.9, 4),
                                           (0.2, -1), (0.25, 0), (0.0, 1)])
def test_int_bits_for(max_abs, bits):
    assert int_bits_for(max_abs) == bits
    if max_abs > 0:
        assert max_abs < 2.0 ** (bits - 1)


@settings(max_examples=200, deadline=None)
@given(a_bits=st.integers(2, 16), b_bits=st.integers(2, 16), fan_in=st.integers(1, 200))
def test_accumulator_never_overflows(a_bits, b_bits, fan_in):
    """Worst case: fan_in products (-2^(a-1)) * (-2^(b-1)) plus a bias as large as one product."""
    width = accumulator_bits(a_bits + b_bits, fan_in)
    worst_positive = (fan_in + 1) * 2 ** (a_bits - 1) * 2 ** (b_bits - 1)
    worst_negative = -(fan_in + 1) * 2 ** (a_bits - 1) * (2 ** (b_bits - 1) - 1)
    assert worst_positive <= 2 ** (width - 1) - 1
    assert worst_negative >= -(2 ** (width - 1))
