"""The canonical GRU model every importer produces and every later stage consumes.

Gate order is (r, z, n), as in PyTorch. ``reset_after`` selects the variant:

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))     # reset_after=True
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)     # reset_after=False
    h' = (1 - z) * n + z * h

Framework quirks (gate order, transposes, bias layouts, the textbook z <-> 1 - z form) are resolved in
the importers; nothing downstream branches on where a model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GruHwError

GATES = ("r", "z", "n")


def _as_float_array(value: object, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GruHwError(f"{where}: {name} is not numeric ({exc})") from None
    if arr.shape != shape:
        raise GruHwError(f"{where}: {name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise GruHwError(f"{where}: {name} contains {bad} NaN or infinite value(s)")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class GRULayer:
    """One GRU layer in canonical (r, z, n) order.

    ``w_ih`` is (3H, I), ``w_hh`` is (3H, H), ``b_ih`` and ``b_hh`` are (3H,). Rows [0:H] are r,
    [H:2H] are z, [2H:3H] are n.
    """

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    where: str = field(default="layer", compare=False, repr=False)

    def __post_init__(self) -> None:
        w_ih = np.asarray(self.w_ih)
        w_hh = np.asarray(self.w_hh)
        if w_ih.ndim != 2 or w_hh.ndim != 2:
            raise GruHwError(
                f"{self.where}: weights must be 2-D, got w_ih {w_ih.shape} and w_hh {w_hh.shape}"
            )
        rows, inputs = w_ih.shape
        if rows == 0 or rows % 3:
            raise GruHwError(f"{self.where}: w_ih has {rows} rows, expected 3*hidden_size > 0")
        if inputs == 0:
            raise GruHwError(f"{self.where}: w_ih has no columns (input size 0)")
        hidden = rows // 3
        object.__setattr__(self, "w_ih", _as_float_array(w_ih, "w_ih", (3 * hidden, inputs), self.where))
        object.__setattr__(self, "w_hh", _as_float_array(w_hh, "w_hh", (3 * hidden, hidden), self.where))
        object.__setattr__(self, "b_ih", _as_float_array(self.b_ih, "b_ih", (3 * hidden,), self.where))
        object.__setattr__(self, "b_hh", _as_float_array(self.b_hh, "b_hh", (3 * hidden,), self.where))

    @property
    def input_size(self) -> int:
        """Number of inputs I."""
        return int(self.w_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        """Number of hidden units H."""
        return int(self.w_hh.shape[1])

    @property
    def num_parameters(self) -> int:
        """Number of weights and biases."""
        return int(self.w_ih.size + self.w_hh.size + self.b_ih.size + self.b_hh.size)


@dataclass(frozen=True, eq=False)
class DenseHead:
    """A dense layer y = W h + b applied to the top layer's last hidden state. ``w`` is (O, H)."""

    w: np.ndarray
    b: np.ndarray
    where: str = field(default="head", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.w)
        if w.ndim != 2 or 0 in w.shape:
            raise GruHwError(f"{self.where}: weight must be a non-empty 2-D (O, H) array, got {w.shape}")
        object.__setattr__(self, "w", _as_float_array(w, "weight", w.shape, self.where))
        object.__setattr__(self, "b", _as_float_array(self.b, "bias", (w.shape[0],), self.where))

    @property
    def output_size(self) -> int:
        """Number of outputs O."""
        return int(self.w.shape[0])

    @property
    def input_size(self) -> int:
        """Number of inputs (the top layer's hidden size)."""
        return int(self.w.shape[1])


@dataclass(frozen=True, eq=False)
class GRUModel:
    """A stack of GRU layers of one variant, with an optional dense head. Validated on construction."""

    layers: tuple[GRULayer, ...]
    reset_after: bool = True
    head: DenseHead | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise GruHwError(f"{self.source or 'model'}: no GRU layer found")
        if not isinstance(self.reset_after, (bool, np.bool_)):
            raise GruHwError(f"{self.source or 'model'}: reset_after must be a bool")
        object.__setattr__(self, "reset_after", bool(self.reset_after))
        for k in range(1, len(layers)):
            if layers[k].input_size != layers[k - 1].hidden_size:
                raise GruHwError(
                    f"{self.source or 'model'}: layer {k} takes {layers[k].input_size} inputs but "
                    f"layer {k - 1} has hidden size {layers[k - 1].hidden_size}"
                )
        if self.head is not None and self.head.input_size != layers[-1].hidden_size:
            raise GruHwError(
                f"{self.source or 'model'}: head takes {self.head.input_size} inputs but the top "
                f"layer has hidden size {layers[-1].hidden_size}"
            )

    @property
    def input_size(self) -> int:
        """Inputs per time step."""
        return self.layers[0].input_size

    @property
    def hidden_size(self) -> int:
        """Hidden size of the top layer."""
        return self.layers[-1].hidden_size

    @property
    def num_layers(self) -> int:
        """Number of stacked GRU layers."""
        return len(self.layers)

    @property
    def output_size(self) -> int:
        """Outputs per sequence: the head's size, or the top hidden size without a head."""
        return self.head.output_size if self.head is not None else self.hidden_size

    @property
    def num_parameters(self) -> int:
        """Total number of weights and biases."""
        n = sum(layer.num_parameters for layer in self.layers)
        if self.head is not None:
            n += self.head.w.size + self.head.b.size
        return int(n)

    @property
    def variant(self) -> str:
        """Human name of the variant."""
        return "reset_after" if self.reset_after else "reset_before"

    def describe(self) -> str:
        """Return a one-line description of the shape."""
        sizes = " -> ".join([str(self.input_size)] + [str(l.hidden_size) for l in self.layers])
        head = f" -> dense {self.head.output_size}" if self.head is not None else ""
        return f"GRU {sizes}{head} ({self.variant}, {self.num_parameters} parameters)"

    # ---- the native .npz form -------------------------------------------------------------------
    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """Return the native ``.npz`` arrays (see interface.md)."""
        out: dict[str, np.ndarray] = {"reset_after": np.array(self.reset_after)}
        for k, layer in enumerate(self.layers):
            out[f"w_ih_{k}"] = layer.w_ih
            out[f"w_hh_{k}"] = layer.w_hh
            out[f"b_ih_{k}"] = layer.b_ih
            out[f"b_hh_{k}"] = layer.b_hh
        if self.head is not None:
            out["head_w"] = self.head.w
            out["head_b"] = self.head.b
        return out

    def save_npz(self, path: str | Path) -> None:
        """Write the model in the native ``.npz`` form."""
        np.savez(path, **self.to_npz_dict())


def from_textbook(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, where: str = "layer"
) -> GRULayer:
    """Map a textbook-form layer (h' = (1 - z) h + z n, gate order r, z, n) onto the canonical one.

    The textbook update gate is the canonical one's complement. Since sigmoid(-a) = 1 - sigmoid(a),
    negating the z rows and z biases of both matrices gives the canonical cell. The fixed-point
    sigmoid is exactly symmetric, so the mapping is exact in hardware too.
    """
    w_ih = np.array(w_ih, dtype=np.float64)
    w_hh = np.array(w_hh, dtype=np.float64)
    b_ih = np.array(b_ih, dtype=np.float64)
    b_hh = np.array(b_hh, dtype=np.float64)
    h = w_hh.shape[1]
    for arr in (w_ih, w_hh, b_ih, b_hh):
        arr[h : 2 * h] *= -1.0
    return GRULayer(w_ih, w_hh, b_ih, b_hh, where=where)
