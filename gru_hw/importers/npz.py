"""The native ``.npz`` form (interface.md).

Keys: ``w_ih_{k}`` (3H, I_k), ``w_hh_{k}`` (3H, H), ``b_ih_{k}``, ``b_hh_{k}`` (3H,) in gate order
(r, z, n) for layers k = 0, 1, ...; optional ``head_w`` (O, H) with ``head_b`` (O,); optional
``reset_after`` (a bool scalar, default True). Anything else in the file is an error, so that a
misspelt key is never silently ignored.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import GruHwError
from ..model import GRUModel
from . import build_model, short

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, zlib.error)
_LAYER_KEY = re.compile(r"^(w_ih|w_hh|b_ih|b_hh)_(\d+)$")


def load(path: Path) -> GRUModel:
    """Read a native ``.npz`` model file."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise GruHwError(f"{path}: holds a single .npy array, not an .npz archive of named arrays")
    if not magic.startswith(b"PK"):
        raise GruHwError(f"{path}: not an .npz archive (no zip signature; corrupt or wrong file)")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise GruHwError(f"{path}: not a readable .npz archive ({short(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GruHwError(f"{path}: holds a single array, not an .npz archive of named arrays")
    with archive:
        try:
            arrays = {key: archive[key] for key in archive.files}
        except _READ_ERRORS as exc:
            raise GruHwError(f"{path}: corrupt .npz archive ({short(exc)})") from None
    return from_arrays(arrays, path)


def _numeric(arrays: dict[str, np.ndarray], key: str, path: Path, ndim: int) -> np.ndarray:
    arr = arrays[key]
    if arr.dtype.kind not in "fiu":
        raise GruHwError(f"{path}: key '{key}' has dtype {arr.dtype}, expected real numbers")
    if arr.ndim != ndim:
        raise GruHwError(f"{path}: key '{key}' has shape {arr.shape}, expected a {ndim}-D array")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise GruHwError(f"{path}: key '{key}' contains {bad} NaN or infinite value(s)")
    return arr


def _expect(arr: np.ndarray, key: str, shape: tuple[int, ...], path: Path) -> None:
    if arr.shape != shape:
        raise GruHwError(f"{path}: key '{key}' has shape {arr.shape}, expected {shape}")


def from_arrays(arrays: dict[str, np.ndarray], path: Path) -> GRUModel:
    """Validate the native arrays (naming the offending key) and build the model."""
    layer_ids: set[int] = set()
    unknown = []
    for key in arrays:
        m = _LAYER_KEY.match(key)
        if m:
            layer_ids.add(int(m.group(2)))
        elif key not in ("head_w", "head_b", "reset_after"):
            unknown.append(key)
    if unknown:
        raise GruHwError(
            f"{path}: unexpected key(s) {', '.join(repr(k) for k in sorted(unknown))}; expected "
            "w_ih_K, w_hh_K, b_ih_K, b_hh_K, head_w, head_b, reset_after"
        )
    if not layer_ids:
        raise GruHwError(f"{path}: missing key 'w_ih_0' (no GRU layer in the file)")
    count = max(layer_ids) + 1
    layers = []
    prev_hidden: int | None = None
    for k in range(count):
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            if f"{name}_{k}" not in arrays:
                raise GruHwError(f"{path}: missing key '{name}_{k}' (layer {k} of {count})")
        w_hh = _numeric(arrays, f"w_hh_{k}", path, 2)
        hidden = w_hh.shape[1]
        if hidden == 0:
            raise GruHwError(f"{path}: key 'w_hh_{k}' has shape {w_hh.shape}: hidden size 0")
        _expect(w_hh, f"w_hh_{k}", (3 * hidden, hidden), path)
        w_ih = _numeric(arrays, f"w_ih_{k}", path, 2)
        inputs = w_ih.shape[1] if prev_hidden is None else prev_hidden
        if inputs == 0:
            raise GruHwError(f"{path}: key 'w_ih_{k}' has shape {w_ih.shape}: input size 0")
        _expect(w_ih, f"w_ih_{k}", (3 * hidden, inputs), path)
        b_ih = _numeric(arrays, f"b_ih_{k}", path, 1)
        _expect(b_ih, f"b_ih_{k}", (3 * hidden,), path)
        b_hh = _numeric(arrays, f"b_hh_{k}", path, 1)
        _expect(b_hh, f"b_hh_{k}", (3 * hidden,), path)
        layers.append((w_ih, w_hh, b_ih, b_hh))
        prev_hidden = hidden
    head = None
    if ("head_w" in arrays) != ("head_b" in arrays):
        have, miss = ("head_w", "head_b") if "head_w" in arrays else ("head_b", "head_w")
        raise GruHwError(f"{path}: key '{have}' is present but '{miss}' is missing")
    if "head_w" in arrays:
        head_w = _numeric(arrays, "head_w", path, 2)
        _expect(head_w, "head_w", (head_w.shape[0], prev_hidden or 0), path)
        if head_w.shape[0] == 0:
            raise GruHwError(f"{path}: key 'head_w' has shape {head_w.shape}: no outputs")
        head_b = _numeric(arrays, "head_b", path, 1)
        _expect(head_b, "head_b", (head_w.shape[0],), path)
        head = (head_w, head_b)
    reset_after = True
    if "reset_after" in arrays:
        flag = arrays["reset_after"]
        if flag.shape not in ((), (1,)) or flag.dtype.kind not in "biu" or (
            flag.dtype.kind != "b" and int(flag.reshape(-1)[0]) not in (0, 1)
        ):
            raise GruHwError(
                f"{path}: key 'reset_after' must be a boolean scalar, got {flag.dtype} "
                f"{flag.shape}"
            )
        reset_after = bool(flag.reshape(-1)[0])
    return build_model(path, layers, reset_after, head)
