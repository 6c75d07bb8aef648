"""The PyTorch half of :mod:`gru_hw.qat`: the autograd functions and the QATGRU module.

Imported on first use by :mod:`gru_hw.qat` (so that ``import gru_hw.qat`` needs no torch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import GruHwError
from .fixed import Overflow, QFormat
from .model import DenseHead, GRULayer, GRUModel
from .qat import MODES, _cell_step, _t_quantize, _t_requantize, _t_round, _TorchPWL
from .quant import PointMode, QuantSpec, check_datapath, choose_spec, quantize_model


class FakeQuant(torch.autograd.Function):
    """Round real values to a format (forward exact); straight-through gradient.

    With ``mask`` the gradient is zero where the value saturated (a clipped STE, for the
    requantization points); without it the gradient passes everywhere (weights).
    """

    @staticmethod
    def forward(ctx, v, fmt, mode, mask):
        scaled = v * math.ldexp(1.0, fmt.frac_bits)
        q = _t_round(torch, scaled, mode.rounding)
        lo, hi = float(fmt.min_int), float(fmt.max_int)
        if mode.overflow is Overflow.SATURATE:
            over = (q < lo) | (q > hi)
            q = q.clamp(lo, hi)
        else:
            over = None
            q = torch.remainder(q - lo, float(1 << fmt.width)) + lo
        ctx.save_for_backward(over if (mask and over is not None) else None)
        return q * math.ldexp(1.0, -fmt.frac_bits)

    @staticmethod
    def backward(ctx, grad):
        (over,) = ctx.saved_tensors
        if over is not None:
            grad = grad.masked_fill(over, 0.0)
        return grad, None, None, None

class PWL(torch.autograd.Function):
    """The PWL table on real inputs already in its input format; the segment's slope as
    derivative (zero where the table clamps)."""

    @staticmethod
    def forward(ctx, a, table):
        ai = torch.round(a * math.ldexp(1.0, table.fi)).to(torch.int64)  # exact: on the grid
        y = table.eval_int(ai).to(torch.float64) * math.ldexp(1.0, -table.fo)
        kk, inside = table.segment(ai)
        ctx.save_for_backward(torch.where(inside, table.slope_real[kk], 0.0))
        return y

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope, None

class Exact:
    """int64 arithmetic: the hardware's."""

    name = "exact"

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec
        self.sig_table = _TorchPWL(torch, spec.sigmoid_table())
        self.tanh_table = _TorchPWL(torch, spec.tanh_table())

    def weight(self, w, fmt):
        return _t_quantize(torch, w.detach(), fmt)

    def inputs(self, x):
        return _t_quantize(torch, x, self.spec.x_fmt, self.spec.mode("x"))

    @staticmethod
    def align(v, frac, to_frac):
        return v << (to_frac - frac) if to_frac != frac else v

    def rq(self, v, frac, fmt, point):
        return _t_requantize(torch, v, frac, fmt, self.spec.mode(point))

    def sigmoid(self, a):
        return self.sig_table.eval_int(a)

    def tanh(self, a):
        return self.tanh_table.eval_int(a)

    @staticmethod
    def zeros(n, h):
        return torch.zeros((n, h), dtype=torch.int64)

    @staticmethod
    def real(v, frac):
        return v.to(torch.float64) * math.ldexp(1.0, -frac)

class Fake(Exact):
    """float64 real values with straight-through estimators."""

    name = "qat"

    def weight(self, w, fmt):
        return FakeQuant.apply(w, fmt, PointMode(), False)

    def inputs(self, x):
        return FakeQuant.apply(x, self.spec.x_fmt, self.spec.mode("x"), True)

    @staticmethod
    def align(v, frac, to_frac):
        return v

    def rq(self, v, frac, fmt, point):
        return FakeQuant.apply(v, fmt, self.spec.mode(point), True)

    def sigmoid(self, a):
        return PWL.apply(a, self.sig_table)

    def tanh(self, a):
        return PWL.apply(a, self.tanh_table)

    @staticmethod
    def zeros(n, h):
        return torch.zeros((n, h), dtype=torch.float64)

    @staticmethod
    def real(v, frac):
        return v

class Float(Fake):
    """The float GRU: no rounding, true sigmoid and tanh."""

    name = "float"

    def __init__(self, spec: QuantSpec | None) -> None:
        self.spec = spec

    @staticmethod
    def weight(w, fmt):
        return w

    @staticmethod
    def inputs(x):
        return x

    @staticmethod
    def rq(v, frac, fmt, point):
        return v

    @staticmethod
    def sigmoid(a):
        return torch.sigmoid(a)

    @staticmethod
    def tanh(a):
        return torch.tanh(a)

class QATGRU(nn.Module):
    """A GRU model (any layers, either variant, optional dense head) under a QuantSpec.

    ``forward(x, lengths=None, *, sequence=False, mode=None)`` takes ``x`` (N, T, I) (a
    tensor or array; steps past ``lengths[n]`` are ignored) and returns real-valued float64
    ``y`` (N, O), or ``(y, h)`` with ``sequence`` (h (N, T, H): the top layer's state at every
    step, zero past a sequence's length). ``mode`` is one of :data:`MODES`; by default
    ``"qat"`` in training mode and ``"exact"`` in eval mode. :meth:`forward_int` is the
    exact mode on already-quantized inputs, returning integers like
    :func:`gru_hw.golden.int_forward_q`.

    Parameters are float64 (the golden model's precision). With ``spec`` every format is
    fixed; otherwise ``weight_bits`` and ``act_bits`` are, and the formats are chosen from
    the current weights by :func:`gru_hw.quant.choose_spec`, with the input format covering
    ``x_max`` (the largest |x| of the calibration data, or ±8 when None).
    """

    def __init__(self, model: GRUModel, *, spec: QuantSpec | None = None,
                 weight_bits: int | None = None, act_bits: int | None = None,
                 x_max: float | None = None, seg_log2: int = 5) -> None:
        super().__init__()
        if spec is None and (weight_bits is None or act_bits is None):
            raise GruHwError("QATGRU: give either a spec or both weight_bits and act_bits")
        if spec is not None and (weight_bits is not None or act_bits is not None
                                 or x_max is not None):
            raise GruHwError("QATGRU: a spec fixes every format; do not also give "
                             "weight_bits, act_bits or x_max")
        self.reset_after = model.reset_after
        self.fixed_spec = spec
        self.weight_bits = spec.weight_bits if spec is not None else weight_bits
        self.act_bits = spec.act_bits if spec is not None else act_bits
        self.x_max = x_max
        self.seg_log2 = seg_log2

        def p(a: np.ndarray) -> Any:
            return nn.Parameter(torch.tensor(np.asarray(a), dtype=torch.float64))

        self.w_ih = nn.ParameterList([p(layer.w_ih) for layer in model.layers])
        self.w_hh = nn.ParameterList([p(layer.w_hh) for layer in model.layers])
        self.b_ih = nn.ParameterList([p(layer.b_ih) for layer in model.layers])
        self.b_hh = nn.ParameterList([p(layer.b_hh) for layer in model.layers])
        self.head_w = p(model.head.w) if model.head is not None else None
        self.head_b = p(model.head.b) if model.head is not None else None
        if spec is not None:
            spec.validate(model)
            check_datapath(quantize_model(model, spec))
        else:
            self.spec()  # checks the widths now

    # ---- shapes and formats ----------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of GRU layers."""
        return len(self.w_hh)

    @property
    def input_size(self) -> int:
        """Inputs per step."""
        return int(self.w_ih[0].shape[1])

    @property
    def output_size(self) -> int:
        """Outputs per sequence."""
        return int(self.head_w.shape[0]) if self.head_w is not None else int(
            self.w_hh[-1].shape[1])

    def to_model(self) -> GRUModel:
        """Return the current (float) parameters as a GRUModel."""
        def a(t: Any) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float64)

        layers = tuple(GRULayer(a(self.w_ih[k]), a(self.w_hh[k]), a(self.b_ih[k]),
                                a(self.b_hh[k]), where=f"layer {k}")
                       for k in range(self.num_layers))
        head = DenseHead(a(self.head_w), a(self.head_b)) if self.head_w is not None else None
        return GRUModel(layers, self.reset_after, head)

    def spec(self) -> QuantSpec:
        """Return the QuantSpec in force: the fixed one, or the one chosen from the weights."""
        if self.fixed_spec is not None:
            return self.fixed_spec
        cal = None if self.x_max is None else np.array([self.x_max])
        return choose_spec(self.to_model(), self.weight_bits, self.act_bits, calibration=cal,
                           seg_log2=self.seg_log2, calibration_name="the calibration inputs")

    def quantized_model(self) -> Any:
        """Return the :class:`gru_hw.quant.QuantModel` of the current weights and spec."""
        return quantize_model(self.to_model(), self.spec())

    def exported_model(self) -> GRUModel:
        """Return the model whose float weights are the integer weights' exact values.

        Quantizing it with :meth:`spec` gives back the same integers (the file ``export``
        writes).
        """
        qm = self.quantized_model()
        spec = qm.spec

        def real(v: np.ndarray, fmt: QFormat) -> np.ndarray:
            return np.ldexp(v.astype(np.float64), -fmt.frac_bits)

        layers = []
        for k, q in enumerate(qm.layers):
            lf = spec.layers[k]
            layers.append(GRULayer(
                real(q.w_ih, lf.w_ih_fmt), real(q.w_hh, lf.w_hh_fmt),
                real(q.b_ih, spec.b_ih_fmt(k)), real(q.b_hh, spec.b_hh_fmt(k)),
                where=f"layer {k}"))
        head = None
        if qm.head_w is not None:
            head = DenseHead(real(qm.head_w, spec.head.w_fmt),
                             real(qm.head_b, spec.head_b_fmt()))
        return GRUModel(tuple(layers), self.reset_after, head)

    # ---- the forward pass -------------------------------------------------------------------
    def forward(self, x: Any, lengths: Any = None, *, sequence: bool = False,
                mode: str | None = None) -> Any:
        """Run the model; see the class docstring."""
        mode = mode or ("qat" if self.training else "exact")
        if mode not in MODES:
            raise GruHwError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        x, lengths = self._inputs(x, lengths)
        spec = self.spec()
        be = {"exact": Exact, "qat": Fake, "float": Float}[mode](spec)
        if mode == "exact":
            with torch.no_grad():
                y, h = self._run(be, spec, be.inputs(x), lengths, sequence)
        else:
            y, h = self._run(be, spec, be.inputs(x), lengths, sequence)
        if mode != "float":
            y = be.real(y, spec.out_fmt.frac_bits)
            h = be.real(h, spec.h_fmt.frac_bits) if sequence else None
        return (y, h) if sequence else y

    def forward_int(self, xq: Any, lengths: Any = None, *, sequence: bool = False
                    ) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """Run the exact mode on int64 inputs in x_fmt; return int64 (y in out_fmt, h in h_fmt).

        The counterpart of :func:`gru_hw.golden.int_forward_q` (``h`` is None unless
        ``sequence``).
        """
        xq = torch.as_tensor(np.asarray(xq) if not isinstance(xq, torch.Tensor) else xq)
        if xq.dtype != torch.int64:
            raise GruHwError(f"forward_int takes int64 inputs, got {xq.dtype}")
        xq, lengths = self._inputs(xq, lengths)
        spec = self.spec()
        with torch.no_grad():
            return self._run(Exact(spec), spec, xq, lengths, sequence)

    def _inputs(self, x: Any, lengths: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.dtype != torch.int64:
            x = x.to(torch.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape:
            raise GruHwError(f"x must be (N, T, {self.input_size}), got {tuple(x.shape)}")
        n, t, _ = x.shape
        if lengths is None:
            lengths = torch.full((n,), t, dtype=torch.int64)
        else:
            lengths = torch.as_tensor(np.asarray(lengths) if not isinstance(
                lengths, torch.Tensor) else lengths).to(torch.int64)
            if tuple(lengths.shape) != (n,) or bool((lengths < 1).any()) or bool(
                    (lengths > t).any()):
                raise GruHwError(f"lengths must be {n} integers in 1..{t}")
        used = torch.arange(t)[None, :] < lengths[:, None]
        if x.dtype == torch.float64 and not bool(torch.isfinite(x[used]).all()):
            raise GruHwError("x contains NaN or infinite values")
        x = torch.where(used[:, :, None], x, torch.zeros((), dtype=x.dtype))
        return x, lengths

    def _weights(self, be: Any, spec: QuantSpec, k: int) -> tuple:
        return (be.weight(self.w_ih[k], spec.layers[k].w_ih_fmt),
                be.weight(self.w_hh[k], spec.layers[k].w_hh_fmt),
                be.weight(self.b_ih[k], spec.b_ih_fmt(k)),
                be.weight(self.b_hh[k], spec.b_hh_fmt(k)))

    def _run(self, be: Any, spec: QuantSpec, x: Any, lengths: Any, sequence: bool) -> tuple:
        n, t, _ = x.shape
        weights = [self._weights(be, spec, k) for k in range(self.num_layers)]
        hs = [be.zeros(n, int(self.w_hh[k].shape[1])) for k in range(self.num_layers)]
        seq = []
        steps = int(lengths.max())
        for step in range(steps):
            active = (step < lengths)[:, None]
            inp = x[:, step, :]
            for k in range(self.num_layers):
                new = _cell_step(be, spec, k, weights[k], inp, hs[k])
                hs[k] = torch.where(active, new, hs[k])
                inp = hs[k]
            if sequence:
                seq.append(torch.where(active, hs[-1], torch.zeros((), dtype=hs[-1].dtype)))
        h_seq = None
        if sequence:
            pad = [be.zeros(n, hs[-1].shape[1])] * (t - steps)
            h_seq = torch.stack(seq + pad, dim=1)
        top = hs[-1]
        if self.head_w is None:
            return top, h_seq
        w = be.weight(self.head_w, spec.head.w_fmt)
        b = be.weight(self.head_b, spec.head_b_fmt())
        acc = top @ w.T + b
        y = be.rq(acc, spec.h_fmt.frac_bits + spec.head.w_fmt.frac_bits, spec.head.out_fmt,
                  "head")
        return y, h_seq
