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
        """Return (max abs error, input where it occurs) over every representable input.

        Computed a block of inputs at a time (memory stays bounded for any width): every input
        with ``|a| < R`` is evaluated, both signs. Beyond R the output is the constant clamp value
        and the function is monotonic, so the error there is largest at the ends of that region,
        which are evaluated.
        """
        spec = self.spec
        fmt = spec.in_fmt
        fi = fmt.frac_bits
        fo = spec.out_fmt.frac_bits
        best = [-1.0, 0.0]

        def keep(err: np.ndarray, x: np.ndarray) -> None:
            i = int(np.argmax(err))
            if err[i] > best[0]:
                best[0], best[1] = float(err[i]), float(x[i])

        top = fmt.max_int + 1  # largest magnitude (of the most negative input)
        inner_end = min(spec.segments_per_half << spec.offset_bits, top)  # first clamped |a|
        for lo in range(0, inner_end, _CHUNK):
            # Magnitudes m < R: a = m and a = -m share the table lookup and the reference.
            m = np.arange(lo, min(lo + _CHUNK, inner_end), dtype=np.int64)
            x = np.ldexp(m.astype(np.float64), -fi)
            y = self.eval_int(m)
            y_neg = self.eval_int(-m)
            if spec.func == "sigmoid":
                t = np.tanh(0.5 * x)
                ref, ref_neg = 0.5 * (1.0 + t), 0.5 * (1.0 - t)
            else:
                ref = np.tanh(x)
                ref_neg = -ref
            keep(np.abs(np.ldexp(y.astype(np.float64), -fo) - ref), x)
            keep(np.where(m >= 1, np.abs(np.ldexp(y_neg.astype(np.float64), -fo) - ref_neg), -1.0),
                 -x)
        if inner_end < top:
            ends = {inner_end, fmt.max_int, -inner_end, fmt.min_int}
            a = np.array(sorted(v for v in ends if fmt.min_int <= v <= fmt.max_int), dtype=np.int64)
            x = np.ldexp(a.astype(np.float64), -fi)
            y = np.ldexp(self.eval_int(a).astype(np.float64), -fo)
            keep(np.abs(y - _ref(spec.func, x)), x)
        return best[0], best[1]


#: Inputs evaluated at once by the exhaustive check (bounds its memory).
_CHUNK = 1 << 18
#: Inputs per half table that a fit evaluates exactly; beyond it, each segment's final scan uses
#: an evenly spaced subsample (the exhaustive check still covers every input).
_FIT_BUDGET = 1 << 20


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


def _seg_errors(spec: PWLSpec, c0: np.ndarray, c1: np.ndarray, d: np.ndarray,
                target: np.ndarray) -> np.ndarray:
    """Max error of each segment (icpt, slope) pair at offsets ``d`` (non-negative inputs).

    ``c0`` and ``c1`` are int64 arrays of the same shape; the result has that shape. The integer
    arithmetic is :func:`_eval`'s for an input inside the segment.
    """
    fo = spec.out_fmt.frac_bits
    big_f = spec.product_frac
    sh = big_f - fo
    acc = (c0[..., None] << (big_f - spec.icpt_frac)) + c1[..., None] * d
    y = (acc + (np.int64(1) << (sh - 1))) >> sh if sh > 0 else acc
    y = np.clip(y, 0, (np.int64(1) << fo) - 1)
    return np.max(np.abs(np.ldexp(y.astype(np.float64), -fo) - target), axis=-1)


def _fit_segment(spec: PWLSpec, k: int) -> tuple[int, int]:
    """Return quantized (icpt, slope) minimizing the max error over the segment's inputs.

    A ternary search over the slope on a subsample of the segment's inputs finds the neighbourhood
    of the optimum; a local scan on every input of the segment (on an evenly spaced subsample of
    them for very wide inputs, see ``_FIT_BUDGET``) then picks the best pair.
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
        dx = np.ldexp(np.ldexp(d.astype(np.float64), -fi), -spec.slope_frac)
        rows = max(1, (1 << 21) // (3 * d.size))  # slopes evaluated at once (bounds memory)

        def best_c0(c1: np.ndarray) -> np.ndarray:
            if pinned:
                return np.full(c1.shape, c0_pin, dtype=np.int64)
            resid = target - c1.astype(np.float64)[:, None] * dx
            mid = 0.5 * (resid.max(axis=1) + resid.min(axis=1))
            return np.floor(np.ldexp(mid, spec.icpt_frac) + 0.5).astype(np.int64)

        def err(c1s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Per slope: the smallest error over the intercept options and its intercept."""
            errs, icpts = [], []
            for i in range(0, c1s.size, rows):
                c1 = c1s[i:i + rows].astype(np.int64)
                c0 = best_c0(c1)[:, None] + (np.zeros(1, np.int64) if pinned
                                             else np.arange(-1, 2, dtype=np.int64))
                e = _seg_errors(spec, c0, np.broadcast_to(c1[:, None], c0.shape), d, target)
                j = np.argmin(e, axis=1)  # ties: the smallest intercept
                errs.append(e[np.arange(e.shape[0]), j])
                icpts.append(c0[np.arange(e.shape[0]), j])
            return np.concatenate(errs), np.concatenate(icpts)

        return err

    coarse = make_err(*grid(512))
    d_all, t_all = grid(max(512, _FIT_BUDGET >> spec.seg_log2))
    x_all = np.ldexp(((np.int64(k) << s) + d_all).astype(np.float64), -fi)
    deriv = _deriv(spec.func, x_all)
    lo = int(math.floor(math.ldexp(float(deriv.min()), spec.slope_frac))) - 2
    hi = int(math.ceil(math.ldexp(float(deriv.max()), spec.slope_frac))) + 2
    while hi - lo > 16:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        e, _ = coarse(np.array([m1, m2], dtype=np.int64))
        if e[0] <= e[1]:
            hi = m2
        else:
            lo = m1
    slopes = np.arange(lo - 4, hi + 5, dtype=np.int64)
    errs, icpts = make_err(d_all, t_all)(slopes)
    best = int(np.argmin(errs))  # ties: the smallest slope
    return int(icpts[best]), int(slopes[best])


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
