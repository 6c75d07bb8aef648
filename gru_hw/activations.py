"""Piecewise-linear sigmoid and tanh: design, integer evaluation, exhaustive error.

The same :class:`PWLTable` drives the golden integer model and the gateware, so both compute the
same bits by construction. The function is evaluated on |a| and mirrored:

    sigmoid(-a) = 1 - sigmoid(a)        tanh(-a) = -tanh(a)

which halves the table and makes the approximation *exactly* symmetric for every representable
input (the textbook GRU form relies on this: it maps onto the canonical one by negating z).

For an input ``a`` in ``in_fmt`` (frac bits ``fi``), with a range R = 2**range_log2 and
S = 2**seg_log2 segments on [0, R) (so 2S segments on [-R, R)):

    m     = |a|                               (an integer; the sign is kept aside)
    s     = fi + range_log2 - seg_log2        (offset bits inside a segment)
    k     = m >> s                            (segment index: a bit slice of |a|)
    d     = m & (2**s - 1)                    (offset in the segment, unsigned)
    acc   = (icpt[k] << (F - fc)) + slope[k] * d        with F = slope_frac + fi, fc = icpt_frac
    y     = round_half_up(acc >> (F - fo))   clamped to [0, 2**fo - 1]   (fo = out frac bits)
    k >= S (|a| >= R): y = clamp_value (f(R) rounded, clamped)
    out   = y                   for a >= 0
    out   = 2**fo - y (sigmoid) or -y (tanh)    for a < 0

Segment 0 is pinned through the centre (icpt[0] = 1/2 for sigmoid, 0 for tanh), so out(0) is exact
and the mirror is consistent at zero. Each segment is fitted minimax (equal ripple) on the actual
representable inputs of that segment, with quantized coefficients and the final rounding included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import GruHwError
from .fixed import QFormat, bits_for_int_range

FUNCTIONS = ("sigmoid", "tanh")


def _ref(func: str, x: np.ndarray) -> np.ndarray:
    if func == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    return np.tanh(x)


def _deriv(func: str, x: np.ndarray) -> np.ndarray:
    if func == "sigmoid":
        s = _ref("sigmoid", x)
        return s * (1.0 - s)
    return 1.0 - np.tanh(x) ** 2


@dataclass(frozen=True)
class PWLSpec:
    """Parameters of one PWL approximation (everything needed to rebuild the same table)."""

    func: str
    in_fmt: QFormat
    out_fmt: QFormat
    range_log2: int
    seg_log2: int
    slope_frac: int
    icpt_frac: int

    def __post_init__(self) -> None:
        if self.func not in FUNCTIONS:
            raise GruHwError(f"PWL function must be one of {FUNCTIONS}, got {self.func!r}")
        if self.out_fmt.int_bits < 1:
            raise GruHwError(f"{self.func}: output format {self.out_fmt} needs at least 1 integer bit")
        if not 0 <= self.seg_log2 <= 12:
            raise GruHwError(f"{self.func}: seg_log2 must be in 0..12, got {self.seg_log2}")
        if self.offset_bits < 0:
            raise GruHwError(
                f"{self.func}: input format {self.in_fmt} is too coarse for {self.segments_per_half} "
                f"segments on [0, {2.0 ** self.range_log2:g}): segment width below one LSB"
            )
        if self.icpt_frac > self.slope_frac + self.in_fmt.frac_bits:
            raise GruHwError(f"{self.func}: icpt_frac must not exceed slope_frac + input frac bits")
        if self.slope_frac + self.in_fmt.frac_bits < self.out_fmt.frac_bits:
            raise GruHwError(f"{self.func}: slope_frac + input frac bits must reach the output frac bits")

    @property
    def segments_per_half(self) -> int:
        """Number of segments on [0, R); the table holds this many entries."""
        return 1 << self.seg_log2

    @property
    def segments(self) -> int:
        """Number of segments on the whole range [-R, R)."""
        return 2 << self.seg_log2

    @property
    def range(self) -> float:
        """R: inputs with |a| >= R are clamped."""
        return math.ldexp(1.0, self.range_log2)

    @property
    def offset_bits(self) -> int:
        """Bits of the offset inside a segment."""
        return self.in_fmt.frac_bits + self.range_log2 - self.seg_log2

    @property
    def product_frac(self) -> int:
        """Fraction bits of slope * offset (F)."""
        return self.slope_frac + self.in_fmt.frac_bits

    def to_json(self) -> dict:
        """Return a JSON-ready dict."""
        return {
            "func": self.func,
            "in_fmt": self.in_fmt.to_json(),
            "out_fmt": self.out_fmt.to_json(),
            "range_log2": self.range_log2,
            "seg_log2": self.seg_log2,
            "slope_frac": self.slope_frac,
            "icpt_frac": self.icpt_frac,
        }

    @classmethod
    def from_json(cls, d: object, where: str = "pwl") -> "PWLSpec":
        """Parse the dict written by :meth:`to_json`."""
        if not isinstance(d, dict):
            raise GruHwError(f"{where}: expected an object, got {type(d).__name__}")
        try:
            return cls(
                func=str(d["func"]),
                in_fmt=QFormat.from_json(d["in_fmt"], f"{where}.in_fmt"),
                out_fmt=QFormat.from_json(d["out_fmt"], f"{where}.out_fmt"),
                range_log2=_int(d["range_log2"], f"{where}.range_log2"),
                seg_log2=_int(d["seg_log2"], f"{where}.seg_log2"),
                slope_frac=_int(d["slope_frac"], f"{where}.slope_frac"),
                icpt_frac=_int(d["icpt_frac"], f"{where}.icpt_frac"),
            )
        except KeyError as exc:
            raise GruHwError(f"{where}: missing key {exc.args[0]!r}") from None


def _int(v: object, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise GruHwError(f"{where}: expected an integer, got {v!r}")
    return v


def default_pwl_spec(func: str, in_fmt: QFormat, out_fmt: QFormat, seg_log2: int = 5) -> PWLSpec:
    """Return the default design: sigmoid on [-8, 8), tanh on [-4, 4), 2**seg_log2 segments a half."""
    range_log2 = 3 if func == "sigmoid" else 2
    slope_frac = out_fmt.frac_bits + 3
    icpt_frac = out_fmt.frac_bits + 3
    # Too coarse an input for this many segments: fall back to fewer segments.
    seg_log2 = min(seg_log2, in_fmt.frac_bits + range_log2)
    icpt_frac = min(icpt_frac, slope_frac + in_fmt.frac_bits)
    return PWLSpec(func, in_fmt, out_fmt, range_log2, seg_log2, slope_frac, icpt_frac)


@dataclass(frozen=True, eq=False)
class PWLTable:
    """A designed PWL approximation: quantized coefficients plus the spec that evaluates them."""

    spec: PWLSpec
    slope: np.ndarray  # int64 (S,), frac bits spec.slope_frac
    icpt: np.ndarray  # int64 (S,), frac bits spec.icpt_frac
    clamp_value: int  # output (positive half) for |a| >= R, frac bits out_fmt.frac_bits
    max_error: float = field(default=float("nan"))

    @property
    def slope_bits(self) -> int:
        """Signed width that holds every slope coefficient."""
        return bits_for_int_range(int(self.slope.min()), int(self.slope.max()))

    @property
    def icpt_bits(self) -> int:
        """Signed width that holds every intercept coefficient."""
        return bits_for_int_range(int(self.icpt.min()), int(self.icpt.max()))

    def eval_int(self, a: np.ndarray) -> np.ndarray:
        """Evaluate on integers in ``spec.in_fmt``; return integers in ``spec.out_fmt``."""
        return _eval(self.spec, self.slope, self.icpt, self.clamp_value, np.asarray(a, dtype=np.int64))

    def eval_float(self, x: np.ndarray) -> np.ndarray:
        """Evaluate on real inputs (quantized half-up, saturated to the input format first)."""
        from .fixed import quantize

        q, _ = quantize(x, self.spec.in_fmt)
        return np.ldexp(self.eval_int(q).astype(np.float64), -self.spec.out_fmt.frac_bits)

    def exhaustive_error(self) -> tuple[float, float]:
        """Return (max abs error, input where it occurs) over every representable input."""
        fmt = self.spec.in_fmt
        a = np.arange(fmt.min_int, fmt.max_int + 1, dtype=np.int64)
        x = np.ldexp(a.astype(np.float64), -fmt.frac_bits)
        y = np.ldexp(self.eval_int(a).astype(np.float64), -self.spec.out_fmt.frac_bits)
        err = np.abs(y - _ref(self.spec.func, x))
        i = int(np.argmax(err))
        return float(err[i]), float(x[i])


def _eval(spec: PWLSpec, slope: np.ndarray, icpt: np.ndarray, clamp_value: int,
          a: np.ndarray) -> np.ndarray:
    fo = spec.out_fmt.frac_bits
    s = spec.offset_bits
    big_f = spec.product_frac
    neg = a < 0
    m = np.abs(a)
    k = m >> s
    inside = k < spec.segments_per_half
    kk = np.where(inside, k, 0)
    d = m & ((np.int64(1) << s) - 1)
    acc = (icpt[kk] << (big_f - spec.icpt_frac)) + slope[kk] * d
    sh = big_f - fo
    y = (acc + (np.int64(1) << (sh - 1))) >> sh if sh > 0 else acc
    y = np.clip(y, 0, (np.int64(1) << fo) - 1)
    y = np.where(inside, y, np.int64(clamp_value))
    if spec.func == "sigmoid":
        out = np.where(neg, (np.int64(1) << fo) - y, y)
    else:
        out = np.where(neg, -y, y)
    return out.astype(np.int64)


def _seg_error(spec: PWLSpec, c0: int, c1: int, d: np.ndarray, target: np.ndarray) -> float:
    """Max error of one segment's (icpt, slope) pair at offsets ``d`` (evaluated as segment 0)."""
    y = _eval(spec, np.array([c1], dtype=np.int64), np.array([c0], dtype=np.int64), 0, d)
    return float(np.max(np.abs(np.ldexp(y.astype(np.float64), -spec.out_fmt.frac_bits) - target)))


def _fit_segment(spec: PWLSpec, k: int) -> tuple[int, int]:
    """Return quantized (icpt, slope) minimizing the max error over the segment's inputs.

    A ternary search over the slope on a subsample of the segment's inputs finds the neighbourhood
    of the optimum; a local scan on every input of the segment then picks the exact best pair.
    """
    s = spec.offset_bits
    fi = spec.in_fmt.frac_bits
    n = 1 << s
    pinned = k == 0
    c0_pin = (1 << spec.icpt_frac) // 2 if spec.func == "sigmoid" else 0

    def grid(limit: int) -> tuple[np.ndarray, np.ndarray]:
        step = max(1, n // limit)
        d = np.arange(0, n, step, dtype=np.int64)
        if d[-1] != n - 1:
            d = np.append(d, n - 1)
        x = np.ldexp(((np.int64(k) << s) + d).astype(np.float64), -fi)
        return d, _ref(spec.func, x)

    def make_err(d: np.ndarray, target: np.ndarray):
        dx = np.ldexp(d.astype(np.float64), -fi)

        def best_c0(c1: int) -> int:
            if pinned:
                return c0_pin
            resid = target - c1 * np.ldexp(dx, -spec.slope_frac)
            mid = 0.5 * (resid.max() + resid.min())
            return int(math.floor(math.ldexp(mid, spec.icpt_frac) + 0.5))

        def err(c1: int) -> tuple[float, int]:
            c0 = best_c0(c1)
            options = (c0,) if pinned else (c0 - 1, c0, c0 + 1)
            return min((_seg_error(spec, c, c1, d, target), c) for c in options)

        return err

    coarse = make_err(*grid(512))
    d_all, t_all = grid(n)
    x_all = np.ldexp(((np.int64(k) << s) + d_all).astype(np.float64), -fi)
    deriv = _deriv(spec.func, x_all)
    lo = int(math.floor(math.ldexp(float(deriv.min()), spec.slope_frac))) - 2
    hi = int(math.ceil(math.ldexp(float(deriv.max()), spec.slope_frac))) + 2
    while hi - lo > 16:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if coarse(m1)[0] <= coarse(m2)[0]:
            hi = m2
        else:
            lo = m1
    fine = make_err(d_all, t_all)
    best = min((fine(c1) + (c1,) for c1 in range(lo - 4, hi + 5)), key=lambda t: t[0])
    return best[1], best[2]


@lru_cache(maxsize=64)
def design_pwl(spec: PWLSpec) -> PWLTable:
    """Fit, quantize and exhaustively check a PWL approximation."""
    segs = spec.segments_per_half
    slope = np.zeros(segs, dtype=np.int64)
    icpt = np.zeros(segs, dtype=np.int64)
    for k in range(segs):
        icpt[k], slope[k] = _fit_segment(spec, k)
    fo = spec.out_fmt.frac_bits
    clamp = int(math.floor(math.ldexp(float(_ref(spec.func, np.array(spec.range))), fo) + 0.5))
    clamp = min(clamp, (1 << fo) - 1)
    table = PWLTable(spec, slope, icpt, clamp)
    err, _ = table.exhaustive_error()
    return PWLTable(spec, slope, icpt, clamp, max_error=err)
