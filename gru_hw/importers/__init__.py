"""Model importers: turn a framework's trained GRU into the canonical :class:`~gru_hw.GRUModel`.

``load_model(path)`` chooses the importer from the file extension:

========================  =============================================================
``.pt`` / ``.pth``        PyTorch ``state_dict`` of an ``nn.GRU`` (+ optional ``nn.Linear``)
``.onnx``                 stacked forward ``GRU`` nodes (+ optional Gemm / MatMul+Add head)
``.keras`` / ``.h5``      Keras 3 ``GRU`` layers (+ optional linear ``Dense`` head)
``.npz``                  the native form (see ``interface.md``)
========================  =============================================================

All framework quirks (gate order, transposes, bias layouts) are resolved here, once. The framework
packages are optional and imported lazily; every user mistake (missing, corrupt or unsupported
file) raises :class:`~gru_hw.errors.GruHwError` with a message naming the file.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import GruHwError
from ..model import DenseHead, GRULayer, GRUModel

__all__ = ["load_model", "SUFFIXES"]

#: Extension -> importer module (inside this package) and human name of the format.
SUFFIXES: dict[str, tuple[str, str]] = {
    ".pt": ("torch", "PyTorch state_dict"),
    ".pth": ("torch", "PyTorch state_dict"),
    ".onnx": ("onnx", "ONNX"),
    ".keras": ("keras", "Keras"),
    ".h5": ("keras", "Keras HDF5"),
    ".npz": ("npz", "native .npz"),
}


def load_model(path: str | os.PathLike[str]) -> GRUModel:
    """Load a trained GRU model from ``path``, choosing the importer by extension.

    Raises :class:`GruHwError` (naming the file) for an unknown extension, a missing, unreadable
    or corrupt file, a missing optional framework package, or a model feature that cannot be
    computed exactly.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(SUFFIXES)
        what = f"extension '{p.suffix}'" if p.suffix else "no extension"
        raise GruHwError(f"{p}: unknown model file type ({what}); expected one of {known}")
    if not p.exists():
        raise GruHwError(f"{p}: no such file")
    if p.is_dir():
        raise GruHwError(f"{p}: is a directory, expected a model file")
    if not os.access(p, os.R_OK):
        raise GruHwError(f"{p}: permission denied")
    if p.stat().st_size == 0:
        raise GruHwError(f"{p}: empty file")
    module_name, _ = SUFFIXES[suffix]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module.load(p)


# ---- helpers shared by the importers ------------------------------------------------------------


def require(module: str, extra: str, path: Path) -> ModuleType:
    """Import an optional framework package, or say which pip extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise GruHwError(
            f"{path}: reading this file needs the '{module}' package, which is not installed "
            f"({exc.__class__.__name__}: {exc}); install it with: pip install gru-hw[{extra}]"
        ) from None


def short(exc: BaseException, limit: int = 200) -> str:
    """A one-line, bounded description of an exception from a third-party parser."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{exc.__class__.__name__}: {text}"


def build_model(
    path: Path,
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    reset_after: bool,
    head: tuple[np.ndarray, np.ndarray] | None,
    names: list[str] | None = None,
) -> GRUModel:
    """Build and validate a :class:`GRUModel` from canonical (r, z, n) arrays.

    ``layers`` holds ``(w_ih, w_hh, b_ih, b_hh)`` per layer; ``names`` optionally names each layer
    as the source file does, for error messages. Validation errors name the file.
    """
    try:
        built = []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
            label = names[k] if names else f"layer {k}"
            built.append(GRULayer(w_ih, w_hh, b_ih, b_hh, where=f"{path}: {label}"))
        dense = None
        if head is not None:
            dense = DenseHead(head[0], head[1], where=f"{path}: head")
        return GRUModel(tuple(built), reset_after=bool(reset_after), head=dense, source=str(path))
    except GruHwError as exc:
        msg = str(exc)
        if str(path) not in msg:
            msg = f"{path}: {msg}"
        raise GruHwError(msg) from None


def reorder_zrn_to_rzn(arr: np.ndarray, hidden: int, axis: int = 0) -> np.ndarray:
    """Reorder gate blocks (z, r, n) -> (r, z, n) along ``axis`` (blocks of ``hidden``)."""
    arr = np.asarray(arr, dtype=np.float64)
    z, r, n = (np.take(arr, range(g * hidden, (g + 1) * hidden), axis=axis) for g in range(3))
    return np.concatenate([r, z, n], axis=axis)
