"""Fixed-point formats and the integer operations the hardware performs.

A format Q(i, f) has ``i`` integer bits *including the sign* and ``f`` fraction bits; a value is
stored as a signed integer ``v`` of ``i + f`` bits and means ``v * 2**-f``. ``f`` may be negative
(a coarse format) and so may ``i`` (a fine one), as long as ``i + f >= 1``.

Every function here works on NumPy int64 arrays (or Python ints) and is exactly what the gateware
does: shifts are arithmetic (floor), rounding adds half an LSB before the shift.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .errors import GruHwError

#: Widest intermediate the NumPy int64 golden model can hold without overflow.
MAX_BITS = 62


class Rounding(enum.Enum):
    """How requantization drops fraction bits."""

    TRUNCATE = "truncate"  #: floor (an arithmetic right shift)
    HALF_UP = "half_up"  #: round to nearest, ties toward +infinity
    HALF_EVEN = "half_even"  #: round to nearest, ties to the even neighbour


class Overflow(enum.Enum):
    """What requantization does with values outside the target format."""

    WRAP = "wrap"  #: keep the low bits (two's complement wrap-around)
    SATURATE = "saturate"  #: clamp to the nearest representable value


@dataclass(frozen=True, order=True)
class QFormat:
    """A signed fixed-point format Q(int_bits, frac_bits); int_bits includes the sign bit."""

    int_bits: int
    frac_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.int_bits, int) or not isinstance(self.frac_bits, int):
            raise GruHwError(f"QFormat bits must be integers, got {self.int_bits!r}, {self.frac_bits!r}")
        if self.width < 1:
            raise GruHwError(f"QFormat Q({self.int_bits},{self.frac_bits}) has width {self.width} < 1")
        if self.width > MAX_BITS:
            raise GruHwError(
                f"QFormat Q({self.int_bits},{self.frac_bits}) is {self.width} bits wide, "
                f"more than the {MAX_BITS} supported"
            )

    @property
    def width(self) -> int:
        """Total number of bits."""
        return self.int_bits + self.frac_bits

    @property
    def min_int(self) -> int:
        """Smallest stored integer."""
        return -(1 << (self.width - 1))

    @property
    def max_int(self) -> int:
        """Largest stored integer."""
        return (1 << (self.width - 1)) - 1

    @property
    def lsb(self) -> float:
        """Value of one least significant bit."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def min_value(self) -> float:
        """Smallest representable value."""
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        """Largest representable value."""
        return self.max_int * self.lsb

    def __str__(self) -> str:
        return f"Q{self.int_bits}.{self.frac_bits}"

    def to_json(self) -> list[int]:
        """Return ``[int_bits, frac_bits]``."""
        return [self.int_bits, self.frac_bits]

    @classmethod
    def from_json(cls, value: object, where: str = "format") -> "QFormat":
        """Parse ``[int_bits, frac_bits]``."""
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise GruHwError(f"{where}: expected [int_bits, frac_bits], got {value!r}")
        try:
            return cls(int(value[0]), int(value[1]))
        except GruHwError as exc:
            raise GruHwError(f"{where}: {exc}") from None

    @classmethod
    def for_range(cls, max_abs: float, width: int) -> "QFormat":
        """Return the format of ``width`` bits with the fewest integer bits that holds ±max_abs."""
        if not math.isfinite(max_abs):
            raise GruHwError(f"cannot choose a format for a non-finite range {max_abs}")
        int_bits = int_bits_for(max_abs)
        return cls(int_bits, width - int_bits)


def int_bits_for(max_abs: float) -> int:
    """Return the integer bits (sign included) needed so that ±max_abs does not saturate.

    Values in [-2**(i-1), 2**(i-1)) fit Q(i, f) up to one LSB at the top; the result is the
    smallest ``i`` with ``max_abs < 2**(i-1)`` (at least 1 - 30 for tiny ranges, never below -30).
    """
    if max_abs <= 0:
        return 1
    return max(-30, math.floor(math.log2(max_abs)) + 2)


def bits_for_int_range(lo: int, hi: int) -> int:
    """Return the width of the smallest signed integer holding every value in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def quantize(x: np.ndarray | float, fmt: QFormat, rounding: Rounding = Rounding.HALF_UP,
             overflow: Overflow = Overflow.SATURATE) -> tuple[np.ndarray, int]:
    """Quantize real values to ``fmt``; return (int64 array, number of saturated elements)."""
    x = np.asarray(x, dtype=np.float64)
    scaled = np.ldexp(x, fmt.frac_bits)
    if rounding is Rounding.TRUNCATE:
        q = np.floor(scaled)
    elif rounding is Rounding.HALF_UP:
        q = np.floor(scaled + 0.5)
    else:
        q = np.round(scaled)  # NumPy rounds half to even
    limit = float(1 << 62)
    q = np.clip(q, -limit, limit).astype(np.int64)
    return _overflow(q, fmt, overflow)


def _overflow(v: np.ndarray, fmt: QFormat, overflow: Overflow) -> tuple[np.ndarray, int]:
    lo, hi = fmt.min_int, fmt.max_int
    if overflow is Overflow.SATURATE:
        sat = int(np.count_nonzero((v < lo) | (v > hi)))
        return np.clip(v, lo, hi).astype(np.int64), sat
    mask = (1 << fmt.width) - 1
    wrapped = ((v - lo) & mask) + lo
    return wrapped.astype(np.int64), int(np.count_nonzero(wrapped != v))


def shift_round(v: np.ndarray, shift: int, rounding: Rounding) -> np.ndarray:
    """Divide integers by 2**shift with the given rounding, as the hardware does.

    A negative ``shift`` multiplies by 2**-shift; the result must fit int64 (an exact left shift
    that does not is a bug in the caller and raises :class:`OverflowError`, never wraps).
    """
    v = np.asarray(v, dtype=np.int64)
    if shift <= 0:
        limit = np.int64(np.iinfo(np.int64).max >> -shift)
        if np.any((v > limit) | (v < -limit - 1)):
            raise OverflowError(f"left shift by {-shift} of values up to {int(np.abs(v).max())} "
                                "exceeds int64")
        return v << (-shift)
    if rounding is Rounding.TRUNCATE:
        return v >> shift
    half = np.int64(1) << (shift - 1)
    if rounding is Rounding.HALF_UP:
        return (v + half) >> shift
    # Half to even: round half up, then step back where the dropped bits were exactly one half
    # and the result came out odd.
    q = (v + half) >> shift
    tie = (v & ((np.int64(1) << shift) - 1)) == half
    return q - (tie & ((q & 1) == 1))


def requantize(v: np.ndarray, from_frac: int, fmt: QFormat, rounding: Rounding = Rounding.HALF_UP,
               overflow: Overflow = Overflow.SATURATE) -> tuple[np.ndarray, int]:
    """Requantize integers with ``from_frac`` fraction bits to ``fmt``.

    Returns (int64 array in ``fmt``, number of elements that overflowed). Gaining fraction bits
    (a left shift) is exact in the hardware, whose shifter widens; here the overflow is decided
    on the unshifted value, so no intermediate ever leaves int64.
    """
    shift = from_frac - fmt.frac_bits
    if shift >= 0:
        return _overflow(shift_round(v, shift, rounding), fmt, overflow)
    v = np.asarray(v, dtype=np.int64)
    up = -shift
    # v << up fits fmt exactly when v lies in [ceil(min_int / 2**up), floor(max_int / 2**up)].
    lo, hi = -((-fmt.min_int) >> up), fmt.max_int >> up
    over = (v < lo) | (v > hi)
    count = int(np.count_nonzero(over))
    mask = (1 << fmt.width) - 1
    if overflow is Overflow.SATURATE:
        q = np.clip(v, lo, hi) << up
        q = np.where(v > hi, fmt.max_int, np.where(v < lo, fmt.min_int, q))
    else:
        # Only the low ``up`` .. ``width`` bits of v matter; keep them before shifting.
        low = v & ((1 << max(fmt.width - up, 0)) - 1)
        q = (((low << up) - fmt.min_int) & mask) + fmt.min_int
    return q.astype(np.int64), count


def to_float(v: np.ndarray, fmt_or_frac: QFormat | int) -> np.ndarray:
    """Return the real values of integers in a format (or with a number of fraction bits)."""
    frac = fmt_or_frac.frac_bits if isinstance(fmt_or_frac, QFormat) else fmt_or_frac
    return np.ldexp(np.asarray(v, dtype=np.float64), -frac)


def accumulator_bits(product_bits: int, fan_in: int) -> int:
    """Return the accumulator width that can never overflow: product bits + ceil(log2(fan_in + 1))."""
    return product_bits + math.ceil(math.log2(fan_in + 1))
