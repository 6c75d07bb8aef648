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

    def validate(self, model: GRUModel | None = None, where: str = "qconfig") -> None:
        """Check internal consistency and, when given, agreement with a model."""
        if self.gate_fmt.int_bits < 1 or self.h_fmt.int_bits < 1:
            raise GruHwError(f"{where}: h_fmt and gate_fmt need at least 1 integer bit (values up to 1)")
        if self.preact_fmt.frac_bits < 0:
            raise GruHwError(f"{where}: preact_fmt {self.preact_fmt} must have fraction bits")
        if not self.layers:
            raise GruHwError(f"{where}: no layers")
        if len({lf.hn_fmt is None for lf in self.layers}) != 1:
            raise GruHwError(f"{where}: hn_fmt must be set on every layer (reset_after) or on none")
        self.sigmoid_spec()
        self.tanh_spec()
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
        """Parse a QuantSpec written by :meth:`to_json`; errors name ``where`` and the key."""
        if not isinstance(d, dict):
            raise GruHwError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT_NAME:
            raise GruHwError(f"{where}: not a gru-hw quantization spec (format is {d.get('format')!r})")
        if d.get("version") != FORMAT_VERSION:
            raise GruHwError(f"{where}: unsupported version {d.get('version')!r} (expected {FORMAT_VERSION})")
        try:
            layers = []
            for k, lj in enumerate(_list(d["layers"], f"{where}.layers")):
                w = f"{where}.layers[{k}]"
                if not isinstance(lj, dict):
                    raise GruHwError(f"{w}: expected an object")
                layers.append(LayerFormats(
                    w_ih_fmt=QFormat.from_json(lj["w_ih_fmt"], f"{w}.w_ih_fmt"),
                    w_hh_fmt=QFormat.from_json(lj["w_hh_fmt"], f"{w}.w_hh_fmt"),
                    b_ih_int_bits=_intval(lj["b_ih_int_bits"], f"{w}.b_ih_int_bits"),
                    b_hh_int_bits=_intval(lj["b_hh_int_bits"], f"{w}.b_hh_int_bits"),
                    hn_fmt=None if lj.get("hn_fmt") is None
                    else QFormat.from_json(lj["hn_fmt"], f"{w}.hn_fmt"),
                ))
            head = None
            if d.get("head") is not None:
                hj = d["head"]
                if not isinstance(hj, dict):
                    raise GruHwError(f"{where}.head: expected an object")
                head = HeadFormats(
                    w_fmt=QFormat.from_json(hj["w_fmt"], f"{where}.head.w_fmt"),
                    b_int_bits=_intval(hj["b_int_bits"], f"{where}.head.b_int_bits"),
                    out_fmt=QFormat.from_json(hj["out_fmt"], f"{where}.head.out_fmt"),
                )
            points = []
            pj = d.get("points", {})
            if not isinstance(pj, dict):
                raise GruHwError(f"{where}.points: expected an object")
            for name, m in pj.items():
                if not isinstance(m, dict):
                    raise GruHwError(f"{where}.points.{name}: expected an object")
                try:
                    mode = PointMode(Rounding(m.get("rounding", "half_up")),
                                     Overflow(m.get("overflow", "saturate")))
                except ValueError as exc:
                    raise GruHwError(f"{where}.points.{name}: {exc}") from None
                if mode != PointMode():  # only non-default modes are kept, so specs compare equal
                    points.append((name, mode))
            spec = cls(
                weight_bits=_intval(d["weight_bits"], f"{where}.weight_bits"),
                act_bits=_intval(d["act_bits"], f"{where}.act_bits"),
                x_fmt=QFormat.from_json(d["x_fmt"], f"{where}.x_fmt"),
                h_fmt=QFormat.from_json(d["h_fmt"], f"{where}.h_fmt"),
                gate_fmt=QFormat.from_json(d["gate_fmt"], f"{where}.gate_fmt"),
                preact_fmt=QFormat.from_json(d["preact_fmt"], f"{where}.preact_fmt"),
                layers=tuple(layers),
                head=head,
                sigmoid=_pwl_params_from(d["sigmoid"], f"{where}.sigmoid"),
                tanh=_pwl_params_from(d["tanh"], f"{where}.tanh"),
                points=tuple(points),
                calibrated=bool(d.get("calibrated", False)),
            )
        except KeyError as exc:
            raise GruHwError(f"{where}: missing key {exc.args[0]!r}") from None
        unknown = set(pj) - set(spec.point_names())
        if unknown:
            raise GruHwError(f"{where}.points: unknown requantization point(s) {sorted(unknown)}")
        spec.validate(where=where)
        return spec

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "QuantSpec":
        """Read a spec written by :meth:`save`; a bad file raises GruHwError naming it."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise GruHwError(f"{p}: cannot read ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GruHwError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
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


def _pwl_params_from(d: object, where: str) -> PWLParams:
    if not isinstance(d, dict):
        raise GruHwError(f"{where}: expected an object")
    try:
        return PWLParams(_intval(d["range_log2"], f"{where}.range_log2"),
                         _intval(d["seg_log2"], f"{where}.seg_log2"),
                         _intval(d.get("slope_guard", 3), f"{where}.slope_guard"),
                         _intval(d.get("icpt_guard", 3), f"{where}.icpt_guard"))
    except KeyError as exc:
        raise GruHwError(f"{where}: missing key {exc.args[0]!r}") from None


def _intval(v: object, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise GruHwError(f"{where}: expected an integer, got {v!r}")
    return int(v)


def _list(v: object, where: str) -> list:
    if not isinstance(v, list):
        raise GruHwError(f"{where}: expected a list")
    return v


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
) -> QuantSpec:
    """Choose formats from the model's weights (and the range of calibration inputs, if given).

    Weight formats take the fewest integer bits that hold the largest weight of each matrix.
    Formats of values bounded by the weights (hn, the head's output) are derived from those bounds,
    so they never saturate. The layer-0 input format covers ±8 by default, or the calibration
    inputs' largest magnitude.
    """
    _check_bits(weight_bits, "--weight-bits", 2, 24)
    _check_bits(act_bits, "--act-bits", 6, 24)
    h_fmt = QFormat(1, act_bits - 1)
    gate_fmt = QFormat(1, act_bits - 1)
    preact_fmt = QFormat(5, act_bits - 1)
    if calibration is not None:
        finite = np.asarray(calibration, dtype=np.float64)
        max_x = float(np.max(np.abs(finite))) if finite.size else 0.0
        x_fmt = QFormat(max(1, int_bits_for(max_x)), act_bits - max(1, int_bits_for(max_x)))
    else:
        x_fmt = QFormat(DEFAULT_X_INT_BITS, act_bits - DEFAULT_X_INT_BITS)
    layers = []
    for k, layer in enumerate(model.layers):
        w_ih_fmt = QFormat.for_range(float(np.max(np.abs(layer.w_ih))), weight_bits)
        w_hh_fmt = QFormat.for_range(float(np.max(np.abs(layer.w_hh))), weight_bits)
        acc_h_frac = h_fmt.frac_bits + w_hh_fmt.frac_bits
        b_ih_int = max(1, int_bits_for(float(np.max(np.abs(layer.b_ih)))))
        b_hh_int = max(1, int_bits_for(float(np.max(np.abs(layer.b_hh)))))
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
        b_int = max(1, int_bits_for(float(np.max(np.abs(model.head.b)))))
        acc_frac = h_fmt.frac_bits + w_fmt.frac_bits
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
    return spec


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
    return QuantModel(spec, tuple(layers), head_w, head_b, model.reset_after, sats)


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
