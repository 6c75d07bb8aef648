"""QuantSpec: a fixed-point format for every tensor and a mode for every requantization point.

The integer datapath (see :mod:`gru_hw.golden` for the exact arithmetic, which the gateware
copies) has these tensors, per layer ``k``:

    x_fmt        layer-0 input (layers k > 0 take the layer below's h, in h_fmt)
    h_fmt        hidden state, and the tanh output n
    gate_fmt     sigmoid outputs r and z
    preact_fmt   inputs of the PWL units (pre-activations)
    w_ih_fmt, w_hh_fmt   weights; biases are stored at the accumulator's fraction bits
    hn_fmt       (reset_after) W_hn h + b_hn, before it is multiplied by r

and these requantization points, each with a rounding and an overflow mode:

    x            float input -> x_fmt (at the edge, in the host)
    l{k}.r, l{k}.z, l{k}.n   accumulated pre-activation -> preact_fmt
    l{k}.hn      (reset_after) W_hn h + b_hn -> hn_fmt
    l{k}.rh      (reset_before) r * h -> h_fmt
    l{k}.h       n + z * (h - n) -> h_fmt
    head         W_o h + b_o -> out_fmt

Accumulators are sized so they never overflow; formats derived from weight bounds (hn, out) never
saturate. Defaults: weights Q(i, B_w - i) with the fewest integer bits for the largest weight,
x in Q4.(B_a-4) (±8, or the calibrated range), h and gates Q1.(B_a-1), pre-activations
Q5.(B_a-1) (the PWL clamps at 8 and 4, so saturating at 16 changes nothing).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .activations import PWLSpec, PWLTable, design_pwl
from .errors import GruHwError
from .fixed import (
    MAX_BITS, Overflow, QFormat, Rounding, int_bits_for, quantize,
)
from .model import GRUModel

FORMAT_NAME = "gru-hw-quant"
FORMAT_VERSION = 1
#: The ``format`` of a generated core's spec.json, whose ``quant`` section is a QuantSpec.
CORE_FORMAT_NAME = "gru-hw-core"
#: Accepted widths (inclusive).
WEIGHT_BITS_RANGE = (2, 24)
ACT_BITS_RANGE = (6, 24)
#: Accepted values of the PWL design knobs (inclusive).
PWL_PARAM_RANGES = {"range_log2": (0, 6), "seg_log2": (0, 12), "slope_guard": (0, 16),
                    "icpt_guard": (0, 16)}
_TOP_KEYS = ("format", "version", "weight_bits", "act_bits", "x_fmt", "h_fmt", "gate_fmt",
             "preact_fmt", "layers", "sigmoid", "tanh")
DEFAULT_WEIGHT_BITS = 16
DEFAULT_ACT_BITS = 16
DEFAULT_X_INT_BITS = 4


@dataclass(frozen=True)
class PointMode:
    """Rounding and overflow of one requantization point."""

    rounding: Rounding = Rounding.HALF_UP
    overflow: Overflow = Overflow.SATURATE


@dataclass(frozen=True)
class PWLParams:
    """The PWL design knobs; the formats come from the QuantSpec."""

    range_log2: int
    seg_log2: int = 5
    slope_guard: int = 3
    icpt_guard: int = 3


@dataclass(frozen=True)
class LayerFormats:
    """Formats of one layer's weights and of its reset_after product operand."""

    w_ih_fmt: QFormat
    w_hh_fmt: QFormat
    b_ih_int_bits: int
    b_hh_int_bits: int
    hn_fmt: QFormat | None


@dataclass(frozen=True)
class HeadFormats:
    """Formats of the dense head."""

    w_fmt: QFormat
    b_int_bits: int
    out_fmt: QFormat


@dataclass(frozen=True)
class QuantSpec:
    """Every format and requantization mode of one model's integer datapath."""

    weight_bits: int
    act_bits: int
    x_fmt: QFormat
    h_fmt: QFormat
    gate_fmt: QFormat
    preact_fmt: QFormat
    layers: tuple[LayerFormats, ...]
    head: HeadFormats | None
    sigmoid: PWLParams = PWLParams(range_log2=3)
    tanh: PWLParams = PWLParams(range_log2=2)
    points: tuple[tuple[str, PointMode], ...] = ()
    calibrated: bool = False

    # ---- derived -------------------------------------------------------------------------------
    def mode(self, point: str) -> PointMode:
        """Return the rounding/overflow of a requantization point (default half-up, saturate)."""
        return dict(self.points).get(point, PointMode())

    def point_names(self) -> list[str]:
        """Return every requantization point of the datapath, in dataflow order."""
        names = ["x"]
        for k, lf in enumerate(self.layers):
            names += [f"l{k}.r", f"l{k}.z"]
            names += [f"l{k}.hn"] if lf.hn_fmt is not None else [f"l{k}.rh"]
            names += [f"l{k}.n", f"l{k}.h"]
        if self.head is not None:
            names.append("head")
        return names

    @property
    def reset_after(self) -> bool:
        """Whether the spec is for the reset_after variant."""
        return self.layers[0].hn_fmt is not None

    def in_fmt(self, k: int) -> QFormat:
        """Format of layer k's input vector."""
        return self.x_fmt if k == 0 else self.h_fmt

    def acc_x_frac(self, k: int) -> int:
        """Fraction bits of W_ih x + b_ih for layer k."""
        return self.in_fmt(k).frac_bits + self.layers[k].w_ih_fmt.frac_bits

    def acc_h_frac(self, k: int) -> int:
        """Fraction bits of W_hh h + b_hh for layer k."""
        return self.h_fmt.frac_bits + self.layers[k].w_hh_fmt.frac_bits

    def b_ih_fmt(self, k: int) -> QFormat:
        """Format of layer k's input bias (at the accumulator's fraction bits)."""
        return QFormat(self.layers[k].b_ih_int_bits, self.acc_x_frac(k))

    def b_hh_fmt(self, k: int) -> QFormat:
        """Format of layer k's recurrent bias (at the accumulator's fraction bits)."""
        return QFormat(self.layers[k].b_hh_int_bits, self.acc_h_frac(k))

    def head_b_fmt(self) -> QFormat:
        """Format of the head's bias (at the head accumulator's fraction bits)."""
        assert self.head is not None
        return QFormat(self.head.b_int_bits, self.h_fmt.frac_bits + self.head.w_fmt.frac_bits)

    @property
    def out_fmt(self) -> QFormat:
        """Format of the core's output: the head's, or h_fmt without a head."""
        return self.head.out_fmt if self.head is not None else self.h_fmt

    def sigmoid_spec(self) -> PWLSpec:
        """The PWL spec of the sigmoid unit."""
        return _pwl_spec("sigmoid", self.sigmoid, self.preact_fmt, self.gate_fmt)

    def tanh_spec(self) -> PWLSpec:
        """The PWL spec of the tanh unit."""
        return _pwl_spec("tanh", self.tanh, self.preact_fmt, self.h_fmt)

    def sigmoid_table(self) -> PWLTable:
        """The designed sigmoid table (cached)."""
        return design_pwl(self.sigmoid_spec())

    def tanh_table(self) -> PWLTable:
        """The designed tanh table (cached)."""
        return design_pwl(self.tanh_spec())

    def validate(self, model: GRUModel | None = None, where: str = "quantization spec") -> None:
        """Check internal consistency and, when given, agreement with a model.

        Messages start with ``where`` (a file name, say) and name the offending key.
        """
        def bad(key: str, what: str) -> GruHwError:
            return GruHwError(f"{where}: {key}: {what}")

        for key, value, (lo, hi) in (("weight_bits", self.weight_bits, WEIGHT_BITS_RANGE),
                                     ("act_bits", self.act_bits, ACT_BITS_RANGE)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise bad(key, f"must be an integer in {lo}..{hi}, got {value!r}")
        for key, fmt in (("h_fmt", self.h_fmt), ("gate_fmt", self.gate_fmt)):
            if fmt.int_bits < 1:
                raise bad(key, f"{fmt} needs at least 1 integer bit (its values reach 1)")
        for key, fmt in (("x_fmt", self.x_fmt), ("h_fmt", self.h_fmt), ("gate_fmt", self.gate_fmt)):
            if fmt.width != self.act_bits:
                raise bad(key, f"{fmt} is {fmt.width} bits wide, but act_bits is {self.act_bits}")
        if self.preact_fmt.frac_bits < 0:
            raise bad("preact_fmt", f"{self.preact_fmt} must have fraction bits")
        if not self.layers:
            raise bad("layers", "no layers")
        if len({lf.hn_fmt is None for lf in self.layers}) != 1:
            raise GruHwError(f"{where}: hn_fmt must be set on every layer (reset_after) or on none")
        for k, lf in enumerate(self.layers):
            for name, fmt in (("w_ih_fmt", lf.w_ih_fmt), ("w_hh_fmt", lf.w_hh_fmt)):
                if fmt.width != self.weight_bits:
                    raise bad(f"layers[{k}].{name}", f"{fmt} is {fmt.width} bits wide, but "
                                                     f"weight_bits is {self.weight_bits}")
            if lf.hn_fmt is not None and lf.hn_fmt.int_bits < 1:
                raise bad(f"layers[{k}].hn_fmt", f"{lf.hn_fmt} needs at least 1 integer bit")
            for name, fmt_of in (("b_ih_int_bits", self.b_ih_fmt),
                                 ("b_hh_int_bits", self.b_hh_fmt)):
                try:
                    fmt_of(k)
                except GruHwError as exc:
                    raise bad(f"layers[{k}].{name}", f"the bias format would be invalid ({exc})") \
                        from None
        if self.head is not None:
            if self.head.w_fmt.width != self.weight_bits:
                raise bad("head.w_fmt", f"{self.head.w_fmt} is {self.head.w_fmt.width} bits wide, "
                                        f"but weight_bits is {self.weight_bits}")
            try:
                self.head_b_fmt()
            except GruHwError as exc:
                raise bad("head.b_int_bits", f"the bias format would be invalid ({exc})") from None
        for key, p in (("sigmoid", self.sigmoid), ("tanh", self.tanh)):
            for field_name, (lo, hi) in PWL_PARAM_RANGES.items():
                v = getattr(p, field_name)
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    raise bad(f"{key}.{field_name}", f"must be an integer in {lo}..{hi}, got {v!r}")
        for key, make in (("sigmoid", self.sigmoid_spec), ("tanh", self.tanh_spec)):
            try:
                make()
            except GruHwError as exc:
                raise bad(key, str(exc)) from None
        for k in range(len(self.layers)):
            for name, w in self.widths(k).items():
                if w > MAX_BITS:
                    raise GruHwError(f"{where}: layer {k} {name} would be {w} bits wide (max {MAX_BITS})")
        if model is not None:
            if len(self.layers) != model.num_layers:
                raise GruHwError(
                    f"{where}: has {len(self.layers)} layer(s), the model has {model.num_layers}"
                )
            if (self.head is None) != (model.head is None):
                raise GruHwError(f"{where}: {'has no' if self.head is None else 'has a'} head, "
                                 f"the model {'has one' if model.head is not None else 'has none'}")
            if self.reset_after != model.reset_after:
                raise GruHwError(f"{where}: is for the {'reset_after' if self.reset_after else 'reset_before'} "
                                 f"variant, the model is {model.variant}")

    def widths(self, k: int) -> dict[str, int]:
        """Return the widths of layer k's wide intermediates (for checks and the gateware)."""
        lf = self.layers[k]
        in_fmt = self.in_fmt(k)
        prod_x = in_fmt.width + lf.w_ih_fmt.width
        prod_h = self.h_fmt.width + lf.w_hh_fmt.width
        return {"product_x": prod_x, "product_h": prod_h}

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Return the JSON-ready form (read back by :meth:`from_json`)."""
        layers = []
        for lf in self.layers:
            layers.append({
                "w_ih_fmt": lf.w_ih_fmt.to_json(),
                "w_hh_fmt": lf.w_hh_fmt.to_json(),
                "b_ih_int_bits": lf.b_ih_int_bits,
                "b_hh_int_bits": lf.b_hh_int_bits,
                "hn_fmt": lf.hn_fmt.to_json() if lf.hn_fmt is not None else None,
            })
        head = None
        if self.head is not None:
            head = {"w_fmt": self.head.w_fmt.to_json(), "b_int_bits": self.head.b_int_bits,
                    "out_fmt": self.head.out_fmt.to_json()}
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "calibrated": self.calibrated,
            "x_fmt": self.x_fmt.to_json(),
            "h_fmt": self.h_fmt.to_json(),
            "gate_fmt": self.gate_fmt.to_json(),
            "preact_fmt": self.preact_fmt.to_json(),
            "layers": layers,
            "head": head,
            "sigmoid": _pwl_params_json(self.sigmoid),
            "tanh": _pwl_params_json(self.tanh),
            "points": {name: {"rounding": self.mode(name).rounding.value,
                              "overflow": self.mode(name).overflow.value}
                       for name in self.point_names()},
        }

    @classmethod
    def from_json(cls, d: object, where: str = "qconfig") -> "QuantSpec":
        """Parse a QuantSpec written by :meth:`to_json`, strictly.

        Unknown or missing keys, wrong types, out-of-range values and inconsistent widths are
        errors; each message starts with ``where`` and names the key.
        """
        if not isinstance(d, dict):
            raise GruHwError(f"{where}: expected a JSON object, got {_json_type(d)}")
        if d.get("format") != FORMAT_NAME:
            raise GruHwError(f"{where}: not a gru-hw quantization spec (format is {d.get('format')!r})")
        if d.get("version") != FORMAT_VERSION:
            raise GruHwError(f"{where}: unsupported version {d.get('version')!r} (expected {FORMAT_VERSION})")
        top = _Obj(d, where, "", required=_TOP_KEYS, optional=("calibrated", "points", "head"))
        layers = []
        for k, lj in enumerate(top.list("layers")):
            lo = _Obj(lj, where, f"layers[{k}]",
                      required=("w_ih_fmt", "w_hh_fmt", "b_ih_int_bits", "b_hh_int_bits"),
                      optional=("hn_fmt",))
            layers.append(LayerFormats(
                w_ih_fmt=lo.fmt("w_ih_fmt"),
                w_hh_fmt=lo.fmt("w_hh_fmt"),
                b_ih_int_bits=lo.int("b_ih_int_bits"),
                b_hh_int_bits=lo.int("b_hh_int_bits"),
                hn_fmt=lo.fmt("hn_fmt") if lj.get("hn_fmt") is not None else None,
            ))
        head = None
        if d.get("head") is not None:
            ho = _Obj(d["head"], where, "head", required=("w_fmt", "b_int_bits", "out_fmt"))
            head = HeadFormats(w_fmt=ho.fmt("w_fmt"), b_int_bits=ho.int("b_int_bits"),
                               out_fmt=ho.fmt("out_fmt"))
        calibrated = d.get("calibrated", False)
        if not isinstance(calibrated, bool):
            raise GruHwError(f"{where}: calibrated: expected true or false, got {calibrated!r}")
        spec = cls(
            weight_bits=top.int("weight_bits"),
            act_bits=top.int("act_bits"),
            x_fmt=top.fmt("x_fmt"),
            h_fmt=top.fmt("h_fmt"),
            gate_fmt=top.fmt("gate_fmt"),
            preact_fmt=top.fmt("preact_fmt"),
            layers=tuple(layers),
            head=head,
            sigmoid=_pwl_params_from(d["sigmoid"], where, "sigmoid"),
            tanh=_pwl_params_from(d["tanh"], where, "tanh"),
            calibrated=calibrated,
        )
        points = []
        pj = d.get("points", {})
        if not isinstance(pj, dict):
            raise GruHwError(f"{where}: points: expected an object")
        unknown = set(pj) - set(spec.point_names())
        if unknown:
            raise GruHwError(f"{where}: points: unknown requantization point(s) {sorted(unknown)} "
                             f"(this spec has {', '.join(spec.point_names())})")
        for name, m in pj.items():
            _Obj(m, where, f"points.{name}", optional=("rounding", "overflow"))
            try:
                mode = PointMode(Rounding(m.get("rounding", "half_up")),
                                 Overflow(m.get("overflow", "saturate")))
            except ValueError as exc:
                raise GruHwError(f"{where}: points.{name}: {exc}") from None
            if mode != PointMode():  # only non-default modes are kept, so specs compare equal
                points.append((name, mode))
        spec = replace(spec, points=tuple(points))
        spec.validate(where=where)
        return spec

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON (atomically: a temporary file in the same folder, renamed)."""
        from .io import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "QuantSpec":
        """Read a spec written by :meth:`save` (or the ``quant`` section of a core's spec.json).

        A bad file raises GruHwError naming it and the offending key.
        """
        p = Path(path)
        if p.is_dir():
            raise GruHwError(f"{p}: is a directory, expected a .json file")
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise GruHwError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise GruHwError(f"{p}: cannot read ({reason})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GruHwError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and data.get("format") == CORE_FORMAT_NAME and "quant" in data:
            return cls.from_json(data["quant"], where=f"{p}: quant")
        return cls.from_json(data, where=str(p))

    def with_point(self, name: str, mode: PointMode) -> "QuantSpec":
        """Return a copy with one requantization point's mode changed."""
        if name not in self.point_names():
            raise GruHwError(f"unknown requantization point {name!r}; known: {self.point_names()}")
        pts = dict(self.points)
        pts[name] = mode
        if mode == PointMode():
            del pts[name]
        return replace(self, points=tuple(pts.items()))


def _pwl_spec(func: str, p: PWLParams, in_fmt: QFormat, out_fmt: QFormat) -> PWLSpec:
    seg_log2 = min(p.seg_log2, in_fmt.frac_bits + p.range_log2)
    slope_frac = out_fmt.frac_bits + p.slope_guard
    icpt_frac = min(out_fmt.frac_bits + p.icpt_guard, slope_frac + in_fmt.frac_bits)
    return PWLSpec(func, in_fmt, out_fmt, p.range_log2, seg_log2, slope_frac, icpt_frac)


def _pwl_params_json(p: PWLParams) -> dict:
    return {"range_log2": p.range_log2, "seg_log2": p.seg_log2,
            "slope_guard": p.slope_guard, "icpt_guard": p.icpt_guard}


class _Obj:
    """A JSON object being parsed: checks its keys, reads typed values, names them in errors."""

    def __init__(self, d: object, where: str, key: str, *, required: tuple[str, ...] = (),
                 optional: tuple[str, ...] = ()) -> None:
        self.where, self.key = where, key
        if not isinstance(d, dict):
            raise self.error(f"expected an object, got {_json_type(d)}")
        self.d = d
        unknown = [k for k in d if k not in required and k not in optional]
        if unknown:
            known = ", ".join(required + optional)
            raise self.error(f"unknown key {unknown[0]!r} (expected {known})")
        for k in required:
            if k not in d:
                raise self.error(f"missing key {k!r}")

    def error(self, what: str, key: str | None = None) -> GruHwError:
        path = ".".join(p for p in (self.key, key) if p)
        return GruHwError(f"{self.where}: {path + ': ' if path else ''}{what}")

    def int(self, key: str) -> int:
        v = self.d[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error(f"expected an integer, got {v!r}", key)
        return v

    def fmt(self, key: str) -> QFormat:
        v = self.d[key]
        path = ".".join(p for p in (self.key, key) if p)
        return QFormat.from_json(v, f"{self.where}: {path}")

    def list(self, key: str) -> list:
        v = self.d[key]
        if not isinstance(v, list):
            raise self.error(f"expected a list, got {_json_type(v)}", key)
        return v


def _json_type(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _pwl_params_from(d: object, where: str, key: str) -> PWLParams:
    o = _Obj(d, where, key, required=("range_log2", "seg_log2"),
             optional=("slope_guard", "icpt_guard"))
    return PWLParams(o.int("range_log2"), o.int("seg_log2"),
                     o.int("slope_guard") if "slope_guard" in d else 3,
                     o.int("icpt_guard") if "icpt_guard" in d else 3)


# ---- choosing formats ------------------------------------------------------------------------------
def _check_bits(value: int, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise GruHwError(f"{name}: must be an integer in {lo}..{hi}, got {value!r}")
    return value


def choose_spec(
    model: GRUModel,
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    act_bits: int = DEFAULT_ACT_BITS,
    calibration: np.ndarray | None = None,
    seg_log2: int = 5,
    *,
    calibration_name: str = "calibration inputs",
) -> QuantSpec:
    """Choose formats from the model's weights (and the range of calibration inputs, if given).

    Weight formats take the fewest integer bits that hold the largest weight of each matrix.
    Formats of values bounded by the weights (hn, the head's output) are derived from those bounds,
    so they never saturate. The layer-0 input format covers ±8 by default, or the calibration
    inputs' largest magnitude (any scale: raw 16-bit audio gets integer bits and no fraction
    bits). Calibration inputs too large for the integer datapath raise GruHwError naming
    ``calibration_name`` and the range.
    """
    _check_bits(weight_bits, "weight_bits", *WEIGHT_BITS_RANGE)
    _check_bits(act_bits, "act_bits", *ACT_BITS_RANGE)
    h_fmt = QFormat(1, act_bits - 1)
    gate_fmt = QFormat(1, act_bits - 1)
    preact_fmt = QFormat(5, act_bits - 1)
    max_x = None
    if calibration is not None:
        finite = np.asarray(calibration, dtype=np.float64)
        if finite.size and not np.all(np.isfinite(finite)):
            raise GruHwError(f"{calibration_name}: contain NaN or infinite values")
        max_x = float(np.max(np.abs(finite))) if finite.size else 0.0
        x_int = max(1, int_bits_for(max_x))
        x_fmt = QFormat(x_int, act_bits - x_int)
    else:
        x_fmt = QFormat(DEFAULT_X_INT_BITS, act_bits - DEFAULT_X_INT_BITS)
    layers = []
    for k, layer in enumerate(model.layers):
        w_ih_fmt = QFormat.for_range(float(np.max(np.abs(layer.w_ih))), weight_bits)
        w_hh_fmt = QFormat.for_range(float(np.max(np.abs(layer.w_hh))), weight_bits)
        acc_h_frac = h_fmt.frac_bits + w_hh_fmt.frac_bits
        in_frac = (x_fmt if k == 0 else h_fmt).frac_bits + w_ih_fmt.frac_bits
        # Biases sit at the accumulator's fraction bits: at least one bit wide even when that
        # LSB is coarser than the bias (raw-scale inputs have negative fraction bits).
        b_ih_int = max(1, int_bits_for(float(np.max(np.abs(layer.b_ih)))), 1 - in_frac)
        b_hh_int = max(1, int_bits_for(float(np.max(np.abs(layer.b_hh)))), 1 - acc_h_frac)
        hn_fmt = None
        if model.reset_after:
            hsz = layer.hidden_size
            wq, _ = quantize(layer.w_hh[2 * hsz:], w_hh_fmt)
            bq, _ = quantize(layer.b_hh[2 * hsz:], QFormat(b_hh_int, acc_h_frac))
            # |h| <= 1 (one LSB short of it, in fact), so |W_hn h + b_hn| <= sum|W_hn| + |b_hn|.
            bound = np.max(np.sum(np.abs(wq), axis=1) * 2.0 ** -w_hh_fmt.frac_bits
                           + np.abs(bq) * 2.0 ** -acc_h_frac)
            ib = max(1, int_bits_for(float(bound)))
            hn_fmt = QFormat(ib, preact_fmt.frac_bits)
        layers.append(LayerFormats(w_ih_fmt, w_hh_fmt, b_ih_int, b_hh_int, hn_fmt))
    head = None
    if model.head is not None:
        w_fmt = QFormat.for_range(float(np.max(np.abs(model.head.w))), weight_bits)
        acc_frac = h_fmt.frac_bits + w_fmt.frac_bits
        b_int = max(1, int_bits_for(float(np.max(np.abs(model.head.b)))), 1 - acc_frac)
        wq, _ = quantize(model.head.w, w_fmt)
        bq, _ = quantize(model.head.b, QFormat(b_int, acc_frac))
        bound = np.max(np.sum(np.abs(wq), axis=1) * 2.0 ** -w_fmt.frac_bits
                       + np.abs(bq) * 2.0 ** -acc_frac)
        oi = max(1, int_bits_for(float(bound)))
        head = HeadFormats(w_fmt, b_int, QFormat(oi, act_bits - oi if act_bits - oi >= 1 else 1))
    spec = QuantSpec(
        weight_bits=weight_bits, act_bits=act_bits, x_fmt=x_fmt, h_fmt=h_fmt, gate_fmt=gate_fmt,
        preact_fmt=preact_fmt, layers=tuple(layers), head=head,
        sigmoid=PWLParams(range_log2=3, seg_log2=seg_log2),
        tanh=PWLParams(range_log2=2, seg_log2=seg_log2),
        calibrated=calibration is not None,
    )
    spec.validate(model)
    if max_x is not None:
        try:
            check_datapath(quantize_model(model, spec))
        except DatapathTooWide as exc:
            raise GruHwError(
                f"{calibration_name}: values reach |x| = {max_x:.6g}, too large a range for "
                f"{act_bits}-bit activations and {weight_bits}-bit weights with this model: "
                f"{exc.detail}; scale the inputs down or use fewer bits") from None
    return spec


class DatapathTooWide(GruHwError):
    """An intermediate of the integer datapath would not fit the supported width."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the integer datapath is too wide: {detail}; narrow the formats "
                         "(or scale the inputs down)")
        self.detail = detail


def datapath_bits(qm: "QuantModel") -> dict[str, int]:
    """Return the signed width of every wide intermediate of the integer datapath, by name.

    Bounds come from the integer weights and the formats' extreme values (every input and
    state), after the alignments :func:`gru_hw.golden.int_step` makes before adding.
    """
    spec = qm.spec
    out: dict[str, int] = {}

    def bits(log2_bound: float) -> int:
        """Signed width holding every integer of magnitude up to 2**log2_bound."""
        if not math.isfinite(log2_bound):
            return 1
        if log2_bound > 1000:
            return math.ceil(log2_bound) + 1
        return max(1, math.ceil(math.log2(2.0 ** log2_bound + 1.0))) + 1

    def acc(w: np.ndarray, b: np.ndarray, in_max: float) -> np.ndarray:
        """log2 of the largest |W v + b| of each row, for |v| <= in_max."""
        with np.errstate(divide="ignore"):
            return np.log2(np.abs(w.astype(np.float64)).sum(axis=1) * in_max
                           + np.abs(b.astype(np.float64)))

    h_max = float(-spec.h_fmt.min_int)
    g_log = float(spec.gate_fmt.frac_bits)  # r <= 1
    for k, q in enumerate(qm.layers):
        lf = spec.layers[k]
        hsz = q.w_hh.shape[1]
        fx, fh = spec.acc_x_frac(k), spec.acc_h_frac(k)
        fmax = max(fx, fh)
        acc_x = acc(q.w_ih, q.b_ih, float(-spec.in_fmt(k).min_int))
        acc_h = acc(q.w_hh, q.b_hh, h_max)
        rz = np.logaddexp2(acc_x[:2 * hsz] + (fmax - fx), acc_h[:2 * hsz] + (fmax - fh))
        out[f"l{k}.rz_sum"] = bits(float(rz.max()))
        if lf.hn_fmt is not None:
            fp = spec.gate_fmt.frac_bits + lf.hn_fmt.frac_bits
            prod = g_log + (lf.hn_fmt.width - 1)
        else:
            fp = fh
            prod = float(acc_h[2 * hsz:].max())
        fn = max(fx, fp)
        n_sum = np.logaddexp2(float(acc_x[2 * hsz:].max()) + (fn - fx), prod + (fn - fp))
        out[f"l{k}.n_sum"] = bits(float(n_sum))
    if qm.head_w is not None:
        out["head_sum"] = bits(float(acc(qm.head_w, qm.head_b, h_max).max()))
    return out


def check_datapath(qm: "QuantModel") -> None:
    """Raise :class:`DatapathTooWide` if an intermediate exceeds the supported width."""
    for name, w in datapath_bits(qm).items():
        if w > MAX_BITS:
            raise DatapathTooWide(f"{name} would need {w} bits (at most {MAX_BITS} are supported)")


# ---- the quantized model -----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantLayer:
    """One layer's integer weights (gate order r, z, n)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


@dataclass(frozen=True, eq=False)
class QuantModel:
    """Integer weights of a model under a QuantSpec, with the saturations their rounding caused."""

    spec: QuantSpec
    layers: tuple[QuantLayer, ...]
    head_w: np.ndarray | None
    head_b: np.ndarray | None
    reset_after: bool
    saturations: dict[str, int] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """Inputs per step."""
        return int(self.layers[0].w_ih.shape[1])

    @property
    def hidden_sizes(self) -> list[int]:
        """Hidden size of each layer."""
        return [int(q.w_hh.shape[1]) for q in self.layers]

    @property
    def output_size(self) -> int:
        """Outputs per sequence."""
        return int(self.head_w.shape[0]) if self.head_w is not None else self.hidden_sizes[-1]


def quantize_model(model: GRUModel, spec: QuantSpec) -> QuantModel:
    """Quantize weights and biases (round half up, saturate) to the spec's formats."""
    spec.validate(model)
    sats: dict[str, int] = {}
    layers = []
    for k, layer in enumerate(model.layers):
        lf = spec.layers[k]
        w_ih, s1 = quantize(layer.w_ih, lf.w_ih_fmt)
        w_hh, s2 = quantize(layer.w_hh, lf.w_hh_fmt)
        b_ih, s3 = quantize(layer.b_ih, spec.b_ih_fmt(k))
        b_hh, s4 = quantize(layer.b_hh, spec.b_hh_fmt(k))
        sats[f"l{k}.weights"] = s1 + s2 + s3 + s4
        layers.append(QuantLayer(w_ih, w_hh, b_ih, b_hh))
    head_w = head_b = None
    if model.head is not None:
        assert spec.head is not None
        head_w, s5 = quantize(model.head.w, spec.head.w_fmt)
        head_b, s6 = quantize(model.head.b, spec.head_b_fmt())
        sats["head.weights"] = s5 + s6
    qm = QuantModel(spec, tuple(layers), head_w, head_b, model.reset_after, sats)
    check_datapath(qm)
    return qm


def accumulator_ranges(qm: QuantModel, k: int) -> dict[str, tuple[int, int]]:
    """Return exact integer ranges of layer k's accumulators over all possible inputs.

    Used to size the gateware's accumulators so they can never overflow.
    """
    spec = qm.spec
    q = qm.layers[k]
    in_fmt = spec.in_fmt(k)

    def rng(w: np.ndarray, b: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
        pos = np.where(w > 0, w * hi, w * lo).sum(axis=1) + b
        neg = np.where(w > 0, w * lo, w * hi).sum(axis=1) + b
        return int(neg.min()), int(pos.max())

    return {
        "acc_x": rng(q.w_ih, q.b_ih, in_fmt.min_int, in_fmt.max_int),
        "acc_h": rng(q.w_hh, q.b_hh, spec.h_fmt.min_int, spec.h_fmt.max_int),
    }


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Return the signal-to-quantization-noise ratio in dB (inf when exact)."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = np.sum((np.asarray(approx, dtype=np.float64) - ref) ** 2)
    signal = np.sum(ref ** 2)
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
