"""Reference models: float (NumPy float64) and bit-exact integer.

Both take inputs ``x`` of shape (N, T, I) and optional ``lengths`` (N,): sequence n uses
``x[n, :lengths[n]]``. Both return a :class:`GoldenResult` whose ``y`` is (N, O) (the head's output,
or the top layer's last hidden state without a head) and, when asked, ``h`` (N, T, H): the top
layer's hidden state at every step, zero past a sequence's length.

With ``keep_state`` the sequences are consecutive chunks of one stream: the hidden state of every
layer carries over from sequence n to sequence n + 1 instead of restarting from zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GruHwError
from .model import GRUModel


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
) -> GoldenResult:
    """Run the float reference model."""
    x, lengths = check_inputs(model, x, lengths)
    if keep_state:
        return _chunked(lambda xs, ls, st: _float_batch(model, xs, ls, sequence, st), x, lengths,
                        [np.zeros((1, l.hidden_size)) for l in model.layers], sequence)
    y, h, _ = _float_batch(model, x, lengths, sequence, None)
    return GoldenResult(y=y, h=h)


def _chunked(run, x, lengths, state, sequence):
    ys, hs = [], []
    sats: dict[str, int] = {}
    for n in range(x.shape[0]):
        out = run(x[n : n + 1], lengths[n : n + 1], state)
        y, h, state = out[0], out[1], out[2]
        if len(out) > 3:
            for key, val in out[3].items():
                sats[key] = sats.get(key, 0) + val
        ys.append(y)
        if sequence:
            hs.append(h)
    return GoldenResult(
        y=np.concatenate(ys), h=np.concatenate(hs) if sequence else None, saturations=sats
    )


def _float_batch(model, x, lengths, sequence, state):
    n, t, _ = x.shape
    hs = [np.zeros((n, l.hidden_size)) if state is None else state[k].copy()
          for k, l in enumerate(model.layers)]
    seq = np.zeros((n, t, model.hidden_size)) if sequence else None
    for step in range(t):
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
            hs[k] = np.where(active, h_new, h)
            inp = hs[k]
        if sequence:
            seq[:, step, :] = np.where(active, hs[-1], 0.0)
    top = hs[-1]
    y = top @ model.head.w.T + model.head.b if model.head is not None else top.copy()
    return y, seq, hs
