"""Quantization-aware training that is bit-exact with the hardware.

:class:`QATGRU` (a ``torch.nn.Module``) wraps a :class:`~gru_hw.model.GRUModel` together with a
:class:`~gru_hw.quant.QuantSpec`. Its forward pass is one graph, the one of
:func:`gru_hw.golden.int_step` (every requantization point, alignment, rounding, saturation and
both PWL tables), run by one of three arithmetics:

``"exact"``  int64 tensors, the shifts and table look-ups of the hardware: outputs equal
             :func:`gru_hw.golden.int_forward_q` bit for bit (``eval()`` mode).
``"qat"``    float64 tensors holding the same real values, with straight-through estimators:
             weights and every requantization point are fake-quantized (the forward value is the
             exact rounded, saturated one; the gradient passes, except where a point saturated),
             and the PWL sigmoid / tanh return the table's value with the slope of the segment as
             derivative (zero where the table clamps). ``train()`` mode. While every intermediate
             fits float64's 53-bit mantissa (any width up to 16-bit weights and activations on
             small models), its forward values equal the exact ones.
``"float"``  the plain float GRU on the same parameters (sigmoid, tanh, no rounding).

Formats: a ``spec`` given to the constructor is used as is (every format fixed). Otherwise the
weight and activation widths are fixed and every format is chosen by
:func:`gru_hw.quant.choose_spec` from the *current* weights (and the calibrated input range):
during training each step re-chooses them, so the formats the trained model is exported with are
the ones it was trained and validated with.

:func:`run_qat` is the whole job behind ``gru-hw qat``: read a model and a training set, measure
float and post-training quantization, train, keep the best epoch on validation data (exact
mode), export ``model.npz`` (the native form, weights exactly on their grids) and
``qconfig.json``, and check that gru-hw's own importer and quantizer reproduce the module's exact
outputs from those files.

PyTorch is imported lazily: ``import gru_hw.qat`` works without it; using the module needs it.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GruHwError
from .fixed import Overflow, QFormat, Rounding
from .model import GRUModel
from .quant import (
    ACT_BITS_RANGE, WEIGHT_BITS_RANGE, PointMode, QuantSpec, choose_spec, quantize_model,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

# QATGRU is provided by __getattr__ (it needs torch), so it is not listed for star imports.
__all__ = ["MODES", "run_qat", "load_training_set", "export", "held_out_split"]

#: Arithmetics of the forward pass.
MODES = ("exact", "qat", "float")
#: File names written by :func:`export`.
MODEL_FILE = "model.npz"
QCONFIG_FILE = "qconfig.json"
REPORT_FILE = "qat.json"
#: ``progress(done, total)``.
Progress = Callable[[int, int], None]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise GruHwError(
            f"quantization-aware training needs PyTorch, which is not installed ({exc}); install "
            "it with: pip install gru-hw[torch]") from None
    return torch


def __getattr__(name: str) -> Any:  # the torch classes are built on first use
    if name == "QATGRU":
        return _classes()["QATGRU"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- integer arithmetic in torch (exactly gru_hw.fixed's) ----------------------------------------
def _t_overflow(torch: Any, v: "torch.Tensor", fmt: QFormat, overflow: Overflow) -> "torch.Tensor":
    lo, hi = fmt.min_int, fmt.max_int
    if overflow is Overflow.SATURATE:
        return v.clamp(lo, hi)
    return ((v - lo) & ((1 << fmt.width) - 1)) + lo


def _t_shift_round(v: "torch.Tensor", shift: int, rounding: Rounding) -> "torch.Tensor":
    """Divide by 2**shift (shift >= 1) with the hardware's rounding."""
    if rounding is Rounding.TRUNCATE:
        return v >> shift
    half = 1 << (shift - 1)
    q = (v + half) >> shift
    if rounding is Rounding.HALF_UP:
        return q
    tie = (v & ((1 << shift) - 1)) == half
    return q - (tie & ((q & 1) == 1)).to(q.dtype)


def _t_requantize(torch: Any, v: "torch.Tensor", from_frac: int, fmt: QFormat,
                  mode: PointMode) -> "torch.Tensor":
    """:func:`gru_hw.fixed.requantize` on int64 tensors (the value only)."""
    shift = from_frac - fmt.frac_bits
    if shift > 0:
        return _t_overflow(torch, _t_shift_round(v, shift, mode.rounding), fmt, mode.overflow)
    if shift == 0:
        return _t_overflow(torch, v, fmt, mode.overflow)
    up = -shift
    lo, hi = -((-fmt.min_int) >> up), fmt.max_int >> up
    if mode.overflow is Overflow.SATURATE:
        q = v.clamp(lo, hi) << up
        q = torch.where(v > hi, fmt.max_int, torch.where(v < lo, fmt.min_int, q))
        return q
    low = v & ((1 << max(fmt.width - up, 0)) - 1)
    return (((low << up) - fmt.min_int) & ((1 << fmt.width) - 1)) + fmt.min_int


def _t_round(torch: Any, scaled: "torch.Tensor", rounding: Rounding) -> "torch.Tensor":
    if rounding is Rounding.TRUNCATE:
        return torch.floor(scaled)
    if rounding is Rounding.HALF_UP:
        return torch.floor(scaled + 0.5)
    return torch.round(scaled)  # half to even, like np.round


def _t_quantize(torch: Any, x: "torch.Tensor", fmt: QFormat,
                mode: PointMode = PointMode()) -> "torch.Tensor":
    """:func:`gru_hw.fixed.quantize` of float64 values to int64 tensors (the value only)."""
    q = _t_round(torch, x.to(torch.float64) * math.ldexp(1.0, fmt.frac_bits), mode.rounding)
    limit = float(1 << 62)
    q = q.clamp(-limit, limit).to(torch.int64)
    return _t_overflow(torch, q, fmt, mode.overflow)


# ---- the PWL tables in torch ---------------------------------------------------------------------
class _TorchPWL:
    """A :class:`gru_hw.activations.PWLTable` as int64 tensors, evaluated as the hardware does."""

    def __init__(self, torch: Any, table: Any) -> None:
        spec = table.spec
        self.func = spec.func
        self.fi = spec.in_fmt.frac_bits
        self.fo = spec.out_fmt.frac_bits
        self.s = spec.offset_bits
        self.segs = spec.segments_per_half
        self.big_f = spec.product_frac
        self.icpt_shift = spec.product_frac - spec.icpt_frac
        self.slope = torch.as_tensor(np.asarray(table.slope, dtype=np.int64))
        self.icpt = torch.as_tensor(np.asarray(table.icpt, dtype=np.int64))
        self.clamp_value = int(table.clamp_value)
        # d(out)/d(in) in real units on each segment, for the straight-through backward pass.
        self.slope_real = self.slope.to(torch.float64) * math.ldexp(1.0, -spec.slope_frac)
        self.torch = torch

    def segment(self, a: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Return (segment index clamped to the table, inside-the-range mask) of integer inputs."""
        k = a.abs() >> self.s
        inside = k < self.segs
        return self.torch.where(inside, k, 0), inside

    def eval_int(self, a: "torch.Tensor") -> "torch.Tensor":
        """Evaluate on int64 inputs in the input format; return int64 outputs."""
        torch = self.torch
        neg = a < 0
        m = a.abs()
        kk, inside = self.segment(a)
        d = m & ((1 << self.s) - 1)
        acc = (self.icpt[kk] << self.icpt_shift) + self.slope[kk] * d
        sh = self.big_f - self.fo
        y = (acc + (1 << (sh - 1))) >> sh if sh > 0 else acc
        y = y.clamp(0, (1 << self.fo) - 1)
        y = torch.where(inside, y, self.clamp_value)
        if self.func == "sigmoid":
            return torch.where(neg, (1 << self.fo) - y, y)
        return torch.where(neg, -y, y)


# ---- the torch classes (built on first use, so that importing this module needs no torch) --------
@functools.lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    _torch()  # a clear error when torch is missing
    from . import _qat_torch

    return {"QATGRU": _qat_torch.QATGRU, "FakeQuant": _qat_torch.FakeQuant,
            "PWL": _qat_torch.PWL}


def _cell_step(be: Any, spec: QuantSpec, k: int, weights: tuple, x_in: Any, h: Any) -> Any:
    """One step of layer k: :func:`gru_hw.golden.int_step`'s graph, in ``be``'s arithmetic."""
    w_ih, w_hh, b_ih, b_hh = weights
    lf = spec.layers[k]
    hsz = h.shape[1]
    fx, fh = spec.acc_x_frac(k), spec.acc_h_frac(k)
    fmax = max(fx, fh)
    pre = spec.preact_fmt
    acc_x = x_in @ w_ih.T + b_ih
    acc_h_rz = h @ w_hh[: 2 * hsz].T + b_hh[: 2 * hsz]
    s_rz = be.align(acc_x[:, : 2 * hsz], fx, fmax) + be.align(acc_h_rz, fh, fmax)
    r = be.sigmoid(be.rq(s_rz[:, :hsz], fmax, pre, f"l{k}.r"))
    z = be.sigmoid(be.rq(s_rz[:, hsz:], fmax, pre, f"l{k}.z"))
    fg = spec.gate_fmt.frac_bits
    fhh = spec.h_fmt.frac_bits
    if lf.hn_fmt is not None:
        hn = be.rq(h @ w_hh[2 * hsz:].T + b_hh[2 * hsz:], fh, lf.hn_fmt, f"l{k}.hn")
        prod = r * hn
        fp = fg + lf.hn_fmt.frac_bits
    else:
        rh = be.rq(r * h, fg + fhh, spec.h_fmt, f"l{k}.rh")
        prod = rh @ w_hh[2 * hsz:].T + b_hh[2 * hsz:]
        fp = fh
    fn = max(fx, fp)
    n = be.tanh(be.rq(be.align(acc_x[:, 2 * hsz:], fx, fn) + be.align(prod, fp, fn), fn, pre,
                       f"l{k}.n"))
    upd = be.align(n, fhh, fhh + fg) + z * (h - n)
    return be.rq(upd, fhh + fg, spec.h_fmt, f"l{k}.h")


# ---- data ----------------------------------------------------------------------------------------
def load_training_set(path: str | Path, model: GRUModel, *, role: str = "training set"
                      ) -> dict[str, Any]:
    """Read INPUTS with ``labels`` (N,) (a classifier) or ``targets`` (N, O) (regression).

    Returns ``{"x", "lengths", "task", "y"}`` (lengths filled in when the file has none; ``task``
    "classification" or "regression"). Errors name the file and what is wrong.
    """
    from .io import load_inputs

    p = Path(path)
    x, lengths = load_inputs(p, model.input_size)
    n, t, _ = x.shape
    if lengths is None:
        lengths = np.full(n, t, dtype=np.int64)
    if p.suffix.lower() != ".npz":
        raise GruHwError(f"{p}: a {role} must be an .npz with x and labels (N,) or targets (N, O)")
    with np.load(p, allow_pickle=False) as data:
        have = {k: data[k] for k in ("labels", "targets") if k in data.files}
    out_size = model.output_size
    if len(have) == 2:
        raise GruHwError(f"{p}: has both 'labels' and 'targets'; keep labels (N,) for a classifier "
                         "or targets (N, O) for regression")
    if not have:
        raise GruHwError(f"{p}: has no 'labels' (N,) or 'targets' (N, {out_size}): a {role} needs "
                         "one of them")
    if "labels" in have:
        labels = have["labels"]
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise GruHwError(f"{p}: labels must be {n} integers (one per sequence), got "
                             f"{labels.dtype} of shape {labels.shape}")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= out_size:
            raise GruHwError(f"{p}: labels must be class indices in 0..{out_size - 1} (the model "
                             f"has {out_size} outputs), got {labels.min()}..{labels.max()}")
        return {"x": x, "lengths": lengths, "task": "classification", "y": labels}
    targets = have["targets"]
    if targets.ndim == 1 and out_size == 1:
        targets = targets[:, None]
    if targets.shape != (n, out_size) or not np.issubdtype(targets.dtype, np.number) \
            or np.iscomplexobj(targets):
        raise GruHwError(f"{p}: targets must be real numbers of shape ({n}, {out_size}) (one row "
                         f"of model outputs per sequence), got {targets.dtype} {targets.shape}")
    targets = targets.astype(np.float64)
    if not np.all(np.isfinite(targets)):
        raise GruHwError(f"{p}: targets contain NaN or infinite values")
    return {"x": x, "lengths": lengths, "task": "regression", "y": targets}


def held_out_split(n: int, labels: np.ndarray | None, fraction: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, validation) indices: ``fraction`` of the sequences, per class if labelled."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c)
                                                    for c in np.unique(labels)]
    val = []
    for g in groups:
        g = rng.permutation(g)
        val.append(g[: int(round(fraction * len(g)))])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def _metric(task: str, y_pred: np.ndarray, y: np.ndarray) -> float:
    if task == "classification":
        return float(np.mean(np.argmax(y_pred, axis=1) == y))
    return float(np.mean((y_pred - y) ** 2))


def _loss(task: str, y_pred: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy (classification) or mean squared error (regression) of outputs."""
    if task == "regression":
        return float(np.mean((y_pred - y) ** 2))
    z = y_pred - y_pred.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


def _score(task: str, metric: float, loss: float) -> tuple[float, ...]:
    """A key to maximise: accuracy, then lower loss (classification); lower MSE (regression)."""
    return (metric, -loss) if task == "classification" else (-metric,)


# ---- export --------------------------------------------------------------------------------------
def export(module: Any, out_dir: str | Path, *, check_x: np.ndarray | None = None,
           check_lengths: np.ndarray | None = None, report: dict | None = None) -> dict[str, str]:
    """Write ``model.npz`` and ``qconfig.json`` (and ``qat.json`` with ``report``) into out_dir.

    The model file holds the integer weights' exact values, so gru-hw's importer and quantizer
    with ``--qconfig out_dir/qconfig.json`` rebuild exactly the module's integer model. With
    ``check_x`` that is verified before anything is published: the files are read back and
    :func:`gru_hw.golden.int_forward_q` on those inputs must equal the module's exact mode
    (a mismatch is a bug and raises AssertionError). Returns the written paths by kind.
    """
    import json

    from .golden import check_inputs, int_forward_q, quantize_inputs
    from .importers import load_model
    from .io import output_dir, write_text_atomic

    spec = module.spec()
    model = module.exported_model()
    out = Path(out_dir)
    with output_dir(out, replaces=(MODEL_FILE, QCONFIG_FILE, REPORT_FILE)) as tmp:
        model.save_npz(tmp / MODEL_FILE)
        spec.save(tmp / QCONFIG_FILE)
        if check_x is not None:
            back = load_model(tmp / MODEL_FILE)
            back_spec = QuantSpec.load(tmp / QCONFIG_FILE)
            back_spec.validate(back)
            x, lengths = check_inputs(back, check_x, check_lengths)
            xq, _ = quantize_inputs(back_spec, x)
            gold = int_forward_q(quantize_model(back, back_spec), xq, lengths, sequence=True)
            y, h = module.forward_int(xq, lengths, sequence=True)
            if not (np.array_equal(gold.y, y.numpy()) and np.array_equal(gold.h, h.numpy())):
                raise AssertionError("the exported model and qconfig do not reproduce the QAT "
                                     "module's exact outputs (a bug in gru_hw.qat)")
        if report is not None:
            write_text_atomic(tmp / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    paths = {"model": str(out / MODEL_FILE), "qconfig": str(out / QCONFIG_FILE)}
    if report is not None:
        paths["report"] = str(out / REPORT_FILE)
    return paths


class _AdamW:
    """AdamW (Loshchilov & Hutter; torch.optim.AdamW's update with its default betas and eps).

    Written out because constructing a torch.optim optimizer imports torch._dynamo, which adds
    seconds to every run for a model this small.
    """

    def __init__(self, torch: Any, params: list, *, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.torch, self.params = torch, params
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, lr: float) -> None:
        b1, b2 = self.betas
        self.steps += 1
        c1, c2 = 1.0 - b1 ** self.steps, 1.0 - b2 ** self.steps
        with self.torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                p.mul_(1.0 - lr * self.weight_decay)
                m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


# ---- the job -------------------------------------------------------------------------------------
def _check_int(value: object, name: str, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo or (
            hi is not None and value > hi):
        what = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise GruHwError(f"{name}: must be an integer {what}, got {value!r}")
    return int(value)


def _qat_inputs(model_path, train_path, out_dir, *, weight_bits, act_bits, epochs, val_path,
                seed, lr, batch_size, weight_decay, input_noise, label_smoothing, val_fraction,
                threads) -> dict:
    """Check run_qat's arguments, load the model and data, split, and measure the baselines."""
    from .golden import float_forward, int_forward
    from .importers import load_model
    from .io import check_output_dir

    weight_bits = _check_int(weight_bits, "weight_bits", *WEIGHT_BITS_RANGE)
    act_bits = _check_int(act_bits, "act_bits", *ACT_BITS_RANGE)
    epochs = _check_int(epochs, "epochs", 1)
    seed = _check_int(seed, "seed", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    threads = _check_int(threads, "threads", 1)
    for name, v, ok in (("lr", lr, lr > 0), ("weight_decay", weight_decay, weight_decay >= 0),
                        ("input_noise", input_noise, input_noise >= 0),
                        ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1),
                        ("val_fraction", val_fraction, 0 < val_fraction < 1)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not ok:
            raise GruHwError(f"{name}: out of range, got {v!r}")
    check_output_dir(out_dir)
    model = load_model(model_path)
    train = load_training_set(train_path, model)
    task = train["task"]
    if val_path is not None:
        val = load_training_set(val_path, model, role="validation set")
        if val["task"] != task:
            kind = {"classification": "labels", "regression": "targets"}
            raise GruHwError(f"{val_path}: has {kind[val['task']]}, but {train_path} has "
                             f"{kind[task]}")
        tr_idx = np.arange(train["x"].shape[0])
        val_source = str(val_path)
    else:
        n = train["x"].shape[0]
        tr_idx, val_idx = held_out_split(n, train["y"] if task == "classification" else None,
                                         val_fraction, seed)
        if len(val_idx) == 0 or len(tr_idx) == 0:
            raise GruHwError(f"{train_path}: {n} sequence(s) are too few to hold out "
                             f"{val_fraction:.0%} for validation; give a validation file")
        val = {k: (v[val_idx] if isinstance(v, np.ndarray) else v) for k, v in train.items()}
        val_source = f"held out: {len(val_idx)} of the {n} sequences of {train_path}"
    used = np.arange(train["x"].shape[1])[None, :] < train["lengths"][:, None]
    cal = train["x"][used]
    # The post-training baseline: the formats gru-hw chooses with --calibrate TRAIN.
    ptq_spec = choose_spec(model, weight_bits, act_bits, calibration=cal,
                           calibration_name=str(train_path))
    x_max = float(np.max(np.abs(cal)))
    xv, lv, yv = val["x"], val["lengths"], val["y"]
    val_float = _metric(task, float_forward(model, xv, lv).y, yv)
    val_ptq = _metric(task, int_forward(quantize_model(model, ptq_spec), xv, lv).y, yv)
    return {"model": model, "train": train, "val": val, "tr_idx": tr_idx, "task": task,
            "val_source": val_source, "ptq_spec": ptq_spec, "x_max": x_max,
            "val_float": val_float, "val_ptq": val_ptq, "cal": cal, "weight_bits": weight_bits,
            "act_bits": act_bits, "epochs": epochs, "seed": seed, "batch_size": batch_size,
            "threads": threads}



def _summary(task, model_path, train_path, val_source, n_train, n_val, weight_bits, act_bits,
             epochs, seed, val_float, val_ptq, history, best_epoch, spec, out_dir,
             train_seconds) -> dict:
    """Return run_qat's summary (also written as qat.json)."""
    out = Path(out_dir)
    return {
        "task": task, "metric": "accuracy" if task == "classification" else "mse",
        "model": str(model_path), "train": str(train_path), "validation": val_source,
        "n_train": int(n_train), "n_val": int(n_val), "weight_bits": weight_bits,
        "act_bits": act_bits, "epochs": epochs, "seed": seed,
        "float": val_float, "ptq": val_ptq, "qat": history[best_epoch]["val_qat"],
        "best_epoch": best_epoch, "history": history, "spec": spec.to_json(),
        "files": {"model": str(out / MODEL_FILE), "qconfig": str(out / QCONFIG_FILE),
                  "report": str(out / REPORT_FILE)},
        "train_seconds": train_seconds,
    }


def run_qat(
    model_path: str | Path,
    train_path: str | Path,
    out_dir: str | Path,
    *,
    weight_bits: int,
    act_bits: int,
    epochs: int,
    val_path: str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    lr: float = 3e-3,
    batch_size: int = 32,
    weight_decay: float = 0.01,
    input_noise: float = 0.1,
    label_smoothing: float = 0.05,
    val_fraction: float = 0.2,
    threads: int = 1,
) -> dict:
    """Fine-tune a trained GRU with bit-exact quantization in the loop; export it for gru-hw.

    ``model_path`` is any MODEL file; ``train_path`` an INPUTS ``.npz`` with ``labels`` (N,)
    (cross-entropy on the outputs, metric accuracy) or ``targets`` (N, O) (mean squared error,
    metric MSE). Validation data come from ``val_path`` (same form) or, without it, a held-out
    ``val_fraction`` of the training file (per class; by ``seed``). Weight and activation widths
    are fixed; every format is chosen by :func:`gru_hw.quant.choose_spec` from the current
    weights, with the input format calibrated on the whole training file (what ``--calibrate
    TRAIN`` chooses).

    Each epoch: AdamW (``lr`` with a cosine schedule, ``weight_decay``, batches of
    ``batch_size``) on the straight-through ``"qat"`` graph, with Gaussian noise of
    ``input_noise`` times each channel's standard deviation added to the training inputs and
    ``label_smoothing`` (classifiers) -- the recipe of examples/train_japanese_vowels.py -- then
    the exact integer model on the validation data. The epoch with the best validation metric
    (ties: the lower validation loss, then the later epoch) is exported into ``out_dir``:
    ``model.npz``, ``qconfig.json`` and ``qat.json`` (this summary), after checking that the
    files reproduce the module's exact outputs. Epoch 0 is the starting model, quantized
    post-training, so the export is never worse on validation than post-training quantization.
    ``progress(done, total)`` is called after every epoch.

    PyTorch runs on ``threads`` threads (restored afterwards). One is the default: the model's
    operations are too small to gain from more, and on a busy machine two were five times
    slower.

    Returns a summary dict: ``task``, ``metric`` ("accuracy" or "mse"), the widths, sizes and
    sources, the validation metric of the ``float`` model, of post-training quantization
    (``ptq``) and of the exported QAT model (``qat``), ``history`` (per epoch: ``epoch``,
    ``train_loss``, ``val_qat`` and ``val_loss`` of the exact model, and ``val_float``, the
    metric of the float weights being trained), ``best_epoch``, ``spec`` (the QuantSpec JSON),
    the written ``files``, ``train_seconds`` and ``seconds``. Raises GruHwError (naming the
    file or argument) for bad input; never prints.
    """
    t_start = time.perf_counter()
    torch = _torch()
    d = _qat_inputs(model_path, train_path, out_dir, weight_bits=weight_bits, act_bits=act_bits,
                    epochs=epochs, val_path=val_path, seed=seed, lr=lr, batch_size=batch_size,
                    weight_decay=weight_decay, input_noise=input_noise,
                    label_smoothing=label_smoothing, val_fraction=val_fraction, threads=threads)
    (model, train, val, tr_idx, task, val_source, ptq_spec, x_max, val_float, val_ptq, cal,
     weight_bits, act_bits, epochs, seed, batch_size, threads) = (
        d["model"], d["train"], d["val"], d["tr_idx"], d["task"], d["val_source"],
        d["ptq_spec"], d["x_max"], d["val_float"], d["val_ptq"], d["cal"], d["weight_bits"],
        d["act_bits"], d["epochs"], d["seed"], d["batch_size"], d["threads"])
    xv, lv, yv = val["x"], val["lengths"], val["y"]

    old_threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, old_threads))
    try:
        gen = torch.Generator().manual_seed(seed)
        module = _classes()["QATGRU"](model, weight_bits=weight_bits, act_bits=act_bits,
                                      x_max=x_max)
        if module.spec() != ptq_spec:  # the same rule on the same weights
            raise AssertionError("QATGRU chose other formats than choose_spec")

        def evaluate() -> dict:
            module.eval()
            with torch.no_grad():
                q = module(xv, lv, mode="exact").numpy()
                f = module(xv, lv, mode="float").numpy()
            return {"val_qat": _metric(task, q, yv), "val_loss": _loss(task, q, yv),
                    "val_float": _metric(task, f, yv)}

        xt = torch.as_tensor(train["x"][tr_idx])
        lt = torch.as_tensor(train["lengths"][tr_idx])
        yt = torch.as_tensor(train["y"][tr_idx])
        # Input noise on the steps in use, scaled per channel by the training inputs' spread.
        noise_std = torch.as_tensor(input_noise * cal.std(axis=0))
        mask = (torch.arange(xt.shape[1])[None, :, None] < lt[:, None, None]) * noise_std
        if task == "classification":
            loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        else:
            loss_fn = torch.nn.MSELoss()
        opt = _AdamW(torch, list(module.parameters()), weight_decay=weight_decay)
        n_tr = xt.shape[0]
        steps = (n_tr + batch_size - 1) // batch_size
        ev = evaluate()
        history = [{"epoch": 0, "train_loss": None, **ev}]
        best = (_score(task, ev["val_qat"], ev["val_loss"]), 0, copy.deepcopy(module.state_dict()))
        for epoch in range(1, epochs + 1):
            module.train()
            perm = torch.randperm(n_tr, generator=gen)
            total = 0.0
            for b in range(steps):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                xb = xt[idx]
                if input_noise > 0:
                    xb = xb + torch.randn(xb.shape, generator=gen,
                                          dtype=torch.float64) * mask[idx]
                loss = loss_fn(module(xb, lt[idx], mode="qat"), yt[idx])
                opt.zero_grad()
                loss.backward()
                # Cosine decay from lr to 0 over all the steps (CosineAnnealingLR's schedule).
                opt.step(lr * 0.5 * (1.0 + math.cos(math.pi * opt.steps / (epochs * steps))))
                total += float(loss.detach()) * len(idx)
            ev = evaluate()
            history.append({"epoch": epoch, "train_loss": total / n_tr, **ev})
            score = _score(task, ev["val_qat"], ev["val_loss"])
            if score >= best[0]:
                best = (score, epoch, copy.deepcopy(module.state_dict()))
            if progress is not None:
                progress(epoch, epochs)
        module.load_state_dict(best[2])
        best_epoch = best[1]
        module.eval()
        spec = module.spec()
        summary = _summary(task, model_path, train_path, val_source, len(tr_idx), xv.shape[0],
                           weight_bits, act_bits, epochs, seed, val_float, val_ptq, history,
                           best_epoch, spec, out_dir, time.perf_counter() - t_start)
        export(module, out_dir, check_x=xv, check_lengths=lv, report=summary)
    finally:
        torch.set_num_threads(old_threads)
    summary["seconds"] = time.perf_counter() - t_start
    return summary
