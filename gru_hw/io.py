"""Reading INPUTS files and writing OUTPUTS files (formats in the interface contract)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import GruHwError


def load_inputs(path: str | Path, input_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read INPUTS: ``.npz`` with ``x`` (N, T, I) and optional ``lengths`` (N,), or ``.npy``.

    Returns (x as float64 (N, T, I), lengths as int64 or None). Errors name the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise GruHwError(f"{p}: no such file")
    if p.is_dir():
        raise GruHwError(f"{p}: is a directory, expected an .npz or .npy file")
    suffix = p.suffix.lower()
    lengths = None
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                if "x" not in data.files:
                    raise GruHwError(f"{p}: has no array 'x' (found: {', '.join(data.files) or 'none'})")
                x = data["x"]
                if "lengths" in data.files:
                    lengths = data["lengths"]
        elif suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        else:
            raise GruHwError(f"{p}: unknown inputs format {suffix or '(no extension)'!r}; use .npz or .npy")
    except GruHwError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GruHwError(f"{p}: cannot read as {suffix} ({exc})") from None
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise GruHwError(f"{p}: x must hold real numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise GruHwError(f"{p}: x must be (N, T, I) or (T, I), got shape {x.shape}")
    if 0 in x.shape:
        raise GruHwError(f"{p}: x is empty (shape {x.shape})")
    if input_size is not None and x.shape[2] != input_size:
        raise GruHwError(f"{p}: x has {x.shape[2]} features per step, the model takes {input_size}")
    n, t, _ = x.shape
    if lengths is not None:
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise GruHwError(f"{p}: lengths must be {n} integers, got {lengths.dtype} of shape {lengths.shape}")
        lengths = lengths.astype(np.int64)
        if np.any(lengths < 1) or np.any(lengths > t):
            raise GruHwError(f"{p}: lengths must be within 1..{t}, got {int(lengths.min())}..{int(lengths.max())}")
    x = x.astype(np.float64)
    used = np.ones((n, t), dtype=bool) if lengths is None else np.arange(t)[None, :] < lengths[:, None]
    bad = ~np.isfinite(x[used])
    if np.any(bad):
        raise GruHwError(f"{p}: x contains {int(np.count_nonzero(bad))} NaN or infinite value(s)")
    return x, lengths


def load_labels(path: str | Path, n: int) -> np.ndarray | None:
    """Return the optional integer ``labels`` (N,) of an INPUTS ``.npz``, or None."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        return None
    with np.load(p, allow_pickle=False) as data:
        if "labels" not in data.files:
            return None
        labels = data["labels"]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise GruHwError(f"{p}: labels must be {n} integers, got {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.int64)


def save_outputs(path: str | Path, **arrays: np.ndarray | None) -> None:
    """Write OUTPUTS as ``.npz`` (arrays that are None are left out), atomically."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise GruHwError(f"{p}: output file must end in .npz")
    if p.parent and not p.parent.exists():
        raise GruHwError(f"{p}: directory {p.parent} does not exist")
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez(tmp, **{k: v for k, v in arrays.items() if v is not None})
    tmp.replace(p)
