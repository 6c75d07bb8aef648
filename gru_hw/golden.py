"""Reference models: float (NumPy float64) and bit-exact integer.

Both take inputs ``x`` of shape (N, T, I) and optional ``lengths`` (N,): sequence n uses
``x[n, :lengths[n]]``. Both return a :class:`GoldenResult` whose ``y`` is (N, O) (the head's output,
or the top layer's last hidden state without a head) and, when asked, ``h`` (N, T, H): the top
layer's hidden state at every step, zero past a sequence's length.

With ``keep_state`` the sequences are consecutive chunks of one stream: the hidden state of every
layer carries over from sequence n to sequence n + 1 instead of restarting from zero.

``progress``, when given, is called as ``progress(done, total)`` as the work advances: time
steps (all sequences run together), or sequences with ``keep_state``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import GruHwError
from .model import GRUModel


#: ``progress(done, total)``: how far a long computation has come.
Progress = Callable[[int, int], None]


@dataclass
class GoldenResult:
    """What a reference model computed."""

    y: np.ndarray
    h: np.ndarray | None = None
    saturations: dict[str, int] = field(default_factory=dict)


def check_inputs(
    model: GRUModel, x: np.ndarray, lengths: np.ndarray | None, where: str = "inputs"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise inputs to float64 (N, T, I) and int64 lengths (N,)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise GruHwError(f"{where}: x must be (N, T, I) or (T, I), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise GruHwError(f"{where}: x must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    n, t, i = x.shape
    if i != model.input_size:
        raise GruHwError(f"{where}: x has {i} features per step, the model takes {model.input_size}")
    if t == 0 or n == 0:
        raise GruHwError(f"{where}: x has no sequences or no steps (shape {x.shape})")
    if lengths is None:
        lengths = np.full(n, t, dtype=np.int64)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise GruHwError(f"{where}: lengths must be {n} integers, got {lengths.dtype} {lengths.shape}")
        lengths = lengths.astype(np.int64)
        if np.any(lengths < 1) or np.any(lengths > t):
            raise GruHwError(f"{where}: lengths must be within 1..{t}, got {lengths.min()}..{lengths.max()}")
    # Only the steps in use must be finite.
    used = np.arange(t)[None, :] < lengths[:, None]
    if not np.all(np.isfinite(x[used])):
        raise GruHwError(f"{where}: x contains NaN or infinite values")
    x = np.where(used[:, :, None], x, 0.0)
    return x, lengths


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def float_forward(
    model: GRUModel,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    sequence: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
) -> GoldenResult:
    """Run the float reference model."""
    x, lengths = check_inputs(model, x, lengths)
    if keep_state:
        return _chunked(lambda xs, ls, st: _float_batch(model, xs, ls, sequence, st), x, lengths,
                        [np.zeros((1, l.hidden_size)) for l in model.layers], sequence, progress)
    y, h, _ = _float_batch(model, x, lengths, sequence, None, progress=progress)
    return GoldenResult(y=y, h=h)


def _chunked(run, x, lengths, state, sequence, progress=None):
    ys, hs = [], []
    sats: dict[str, int] = {}
    for n in range(x.shape[0]):
        if progress is not None:
            progress(n, x.shape[0])
        out = run(x[n : n + 1], lengths[n : n + 1], state)
        y, h, state = out[0], out[1], out[2]
        if len(out) > 3:
            for key, val in out[3].items():
                sats[key] = sats.get(key, 0) + val
        ys.append(y)
        if sequence:
            hs.append(h)
    if progress is not None:
        progress(x.shape[0], x.shape[0])
    return GoldenResult(
        y=np.concatenate(ys), h=np.concatenate(hs) if sequence else None, saturations=sats
    )


def _float_batch(model, x, lengths, sequence, state, trace=None, progress=None):
    n, t, _ = x.shape
    hs = [np.zeros((n, l.hidden_size)) if state is None else state[k].copy()
          for k, l in enumerate(model.layers)]
    seq = np.zeros((n, t, model.hidden_size)) if sequence else None
    for step in range(t):
        if progress is not None:
            progress(step, t)
        active = (step < lengths)[:, None]
        inp = x[:, step, :]
        for k, layer in enumerate(model.layers):
            hsz = layer.hidden_size
            h = hs[k]
            gx = inp @ layer.w_ih.T + layer.b_ih
            w_hh = layer.w_hh
            gh_rz = h @ w_hh[: 2 * hsz].T + layer.b_hh[: 2 * hsz]
            r = _sigmoid(gx[:, :hsz] + gh_rz[:, :hsz])
            z = _sigmoid(gx[:, hsz : 2 * hsz] + gh_rz[:, hsz:])
            if model.reset_after:
                hn = h @ w_hh[2 * hsz :].T + layer.b_hh[2 * hsz :]
                nn_ = np.tanh(gx[:, 2 * hsz :] + r * hn)
            else:
                hn = (r * h) @ w_hh[2 * hsz :].T + layer.b_hh[2 * hsz :]
                nn_ = np.tanh(gx[:, 2 * hsz :] + hn)
            h_new = (1.0 - z) * nn_ + z * h
            if trace is not None:
                a = active[:, 0]
                pre_n = gx[:, 2 * hsz :] + (r * hn if model.reset_after else hn)
                for name, v in (("r", gx[:, :hsz] + gh_rz[:, :hsz]), ("z", gx[:, hsz:2 * hsz] + gh_rz[:, hsz:]),
                                ("hn" if model.reset_after else "rh", hn if model.reset_after else r * h),
                                ("n", pre_n), ("h", h_new)):
                    trace.setdefault(f"l{k}.{name}", []).append(v[a].ravel())
            hs[k] = np.where(active, h_new, h)
            inp = hs[k]
        if sequence:
            seq[:, step, :] = np.where(active, hs[-1], 0.0)
    if progress is not None:
        progress(t, t)
    top = hs[-1]
    y = top @ model.head.w.T + model.head.b if model.head is not None else top.copy()
    if trace is not None and model.head is not None:
        trace.setdefault("head", []).append(y.ravel())
    return y, seq, hs


# ---- the bit-exact integer model ---------------------------------------------------------------
class _Sat:
    """Saturation counters, one per requantization point."""

    def __init__(self, trace: dict[str, list] | None = None) -> None:
        self.counts: dict[str, int] = {}
        #: when not None, the real value after each requantization point, per point
        self.trace = trace

    def record(self, name: str, value: np.ndarray, frac: int) -> None:
        if self.trace is not None:
            self.trace.setdefault(name, []).append(np.ldexp(value.astype(np.float64), -frac).ravel())

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)


def quantize_inputs(spec, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Quantize float inputs to the spec's x format at the ``x`` point; return (ints, saturations)."""
    from .fixed import quantize

    mode = spec.mode("x")
    return quantize(x, spec.x_fmt, mode.rounding, mode.overflow)


def _align(v: np.ndarray, frac: int, to_frac: int) -> np.ndarray:
    return v << (to_frac - frac)


def int_step(qm, k: int, x_in: np.ndarray, h: np.ndarray, sat: _Sat | None = None) -> np.ndarray:
    """Compute one step of layer ``k`` in integers, exactly as the hardware does.

    ``x_in`` is (N, I) in the layer's input format, ``h`` is (N, H) in h_fmt; returns the new h.
    The arithmetic, in order (every shift is exact unless it is a named requantization point):

        acc_x = W_ih x + b_ih                     (fraction bits fx + fw_ih)
        acc_h = W_hh h + b_hh                     (fraction bits fh + fw_hh; for reset_before the
                                                   n rows use r*h instead of h, see below)
        r = sigmoid(requant_{l.r}(acc_x_r + acc_h_r))   both aligned to the finer fraction
        z = sigmoid(requant_{l.z}(acc_x_z + acc_h_z))
        reset_after:  hn = requant_{l.hn}(acc_h_n)  to hn_fmt
                      n  = tanh(requant_{l.n}(acc_x_n + r * hn))
        reset_before: rh = requant_{l.rh}(r * h)    to h_fmt
                      n  = tanh(requant_{l.n}(acc_x_n + W_hn rh + b_hn))
        h' = requant_{l.h}(n + z * (h - n))            to h_fmt
    """
    from .fixed import requantize

    spec = qm.spec
    q = qm.layers[k]
    lf = spec.layers[k]
    sat = sat if sat is not None else _Sat()
    hsz = h.shape[1]
    fx = spec.acc_x_frac(k)
    fh = spec.acc_h_frac(k)
    fmax = max(fx, fh)
    pre_fmt = spec.preact_fmt
    sig = spec.sigmoid_table()
    tnh = spec.tanh_table()

    def rq(v: np.ndarray, frac: int, fmt, point: str) -> np.ndarray:
        mode = spec.mode(f"l{k}.{point}")
        out, n = requantize(v, frac, fmt, mode.rounding, mode.overflow)
        sat.add(f"l{k}.{point}", n)
        sat.record(f"l{k}.{point}", out, fmt.frac_bits)
        return out

    acc_x = x_in @ q.w_ih.T + q.b_ih
    acc_h_rz = h @ q.w_hh[: 2 * hsz].T + q.b_hh[: 2 * hsz]
    s_rz = _align(acc_x[:, : 2 * hsz], fx, fmax) + _align(acc_h_rz, fh, fmax)
    r = sig.eval_int(rq(s_rz[:, :hsz], fmax, pre_fmt, "r"))
    z = sig.eval_int(rq(s_rz[:, hsz:], fmax, pre_fmt, "z"))
    fg = spec.gate_fmt.frac_bits
    acc_x_n = acc_x[:, 2 * hsz :]
    if lf.hn_fmt is not None:
        acc_hn = h @ q.w_hh[2 * hsz :].T + q.b_hh[2 * hsz :]
        hn = rq(acc_hn, fh, lf.hn_fmt, "hn")
        prod = r * hn
        fp = fg + lf.hn_fmt.frac_bits
    else:
        rh = rq(r * h, fg + spec.h_fmt.frac_bits, spec.h_fmt, "rh")
        prod = rh @ q.w_hh[2 * hsz :].T + q.b_hh[2 * hsz :]
        fp = fh
    fn = max(fx, fp)
    n = tnh.eval_int(rq(_align(acc_x_n, fx, fn) + _align(prod, fp, fn), fn, pre_fmt, "n"))
    fhh = spec.h_fmt.frac_bits
    upd = (n << fg) + z * (h - n)
    return rq(upd, fhh + fg, spec.h_fmt, "h")


def int_head(qm, h: np.ndarray, sat: _Sat | None = None) -> np.ndarray:
    """Apply the dense head in integers: requant_{head}(W_o h + b_o) to out_fmt."""
    from .fixed import requantize

    spec = qm.spec
    acc = h @ qm.head_w.T + qm.head_b
    mode = spec.mode("head")
    out, n = requantize(acc, spec.h_fmt.frac_bits + spec.head.w_fmt.frac_bits, spec.head.out_fmt,
                        mode.rounding, mode.overflow)
    if sat is not None:
        sat.add("head", n)
        sat.record("head", out, spec.head.out_fmt.frac_bits)
    return out


def int_forward_q(
    qm,
    xq: np.ndarray,
    lengths: np.ndarray,
    *,
    sequence: bool = False,
    keep_state: bool = False,
    state: list[np.ndarray] | None = None,
    trace: dict[str, list] | None = None,
    progress: Progress | None = None,
) -> GoldenResult:
    """Run the integer model on already-quantized inputs (int64 (N, T, I) in x_fmt).

    Returns integer outputs: ``y`` in out_fmt and ``h`` in h_fmt. ``state`` (one (1, H) array per
    layer) is the starting state with ``keep_state``; it is updated in place. ``trace``, when
    given, collects the real value after every requantization point (for calibration reports).
    """
    sat = _Sat(trace)
    if keep_state:
        st = state if state is not None else [np.zeros((1, hs), dtype=np.int64) for hs in qm.hidden_sizes]
        ys, hs = [], []
        for n in range(xq.shape[0]):
            if progress is not None:
                progress(n, xq.shape[0])
            y, h = _int_batch(qm, xq[n : n + 1], lengths[n : n + 1], sequence, st, sat)
            ys.append(y)
            hs.append(h)
        if progress is not None:
            progress(xq.shape[0], xq.shape[0])
        return GoldenResult(np.concatenate(ys), np.concatenate(hs) if sequence else None, sat.counts)
    y, h = _int_batch(qm, xq, lengths, sequence, None, sat, progress)
    return GoldenResult(y, h, sat.counts)


def _int_batch(qm, xq, lengths, sequence, state, sat, progress=None):
    n, t, _ = xq.shape
    if state is None:
        hs = [np.zeros((n, hsz), dtype=np.int64) for hsz in qm.hidden_sizes]
    else:
        hs = state
    seq = np.zeros((n, t, qm.hidden_sizes[-1]), dtype=np.int64) if sequence else None
    steps = int(lengths.max())
    for step in range(steps):
        if progress is not None:
            progress(step, steps)
        active = (step < lengths)[:, None]
        inp = xq[:, step, :]
        for k in range(len(qm.layers)):
            # Count saturations only for the sequences still running.
            new = int_step(qm, k, inp[active[:, 0]], hs[k][active[:, 0]], sat)
            hk = hs[k].copy()
            hk[active[:, 0]] = new
            hs[k][...] = hk
            inp = hs[k]
        if sequence:
            seq[:, step, :] = np.where(active, hs[-1], 0)
    if progress is not None:
        progress(steps, steps)
    top = hs[-1]
    y = int_head(qm, top, sat) if qm.head_w is not None else top.copy()
    return y, seq


def int_forward(
    qm,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    sequence: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
) -> GoldenResult:
    """Run the bit-exact integer model on float inputs; return real-valued outputs.

    Inputs are quantized at the ``x`` point; ``y`` and ``h`` are converted back to floats (exactly:
    they are integers times a power of two). Saturation counts per point are in ``saturations``.
    """
    from .fixed import to_float

    model_like = _Shape(qm)
    x, lengths = check_inputs(model_like, x, lengths)
    xq, nsat = quantize_inputs(qm.spec, x)
    res = int_forward_q(qm, xq, lengths, sequence=sequence, keep_state=keep_state,
                        progress=progress)
    res.saturations = {"x": nsat, **qm.saturations, **res.saturations}
    y = to_float(res.y, qm.spec.out_fmt)
    h = to_float(res.h, qm.spec.h_fmt) if sequence else None
    return GoldenResult(y, h, res.saturations)


class _Shape:
    def __init__(self, qm) -> None:
        self.input_size = qm.input_size
