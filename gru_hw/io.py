"""Reading INPUTS files and writing OUTPUTS files (formats in the interface contract).

Every file a command writes goes through here: :func:`check_output_file` and
:func:`check_output_dir` check a target before any work starts (they leave nothing behind), and
the writers are atomic (a temporary file in the target's folder, renamed into place; a failure
removes it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

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


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _temp_name(target: Path, suffix: str = ".tmp") -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")


def _probe_dir(folder: Path, target: Path) -> None:
    """Check that files can be created in ``folder`` (by creating and removing one)."""
    probe = _temp_name(target if target.parent == folder else folder / target.name)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise GruHwError(f"{target}: cannot write in {folder} ({_reason(exc)})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_output_file(path: str | Path, suffix: str | None = ".npz") -> Path:
    """Check that ``path`` can be written as a file (with ``suffix``, if given); return it.

    Raises GruHwError naming the path: wrong extension, a directory, a missing or non-directory
    parent, or a parent where no file can be created. Leaves nothing behind.
    """
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise GruHwError(f"{str(path)!r}: not a file name")
    if suffix is not None and p.suffix.lower() != suffix:
        raise GruHwError(f"{p}: output file must end in {suffix}")
    if p.is_dir():
        raise GruHwError(f"{p}: is a directory, expected a file name")
    parent = p.parent
    if not parent.exists():
        raise GruHwError(f"{p}: directory {parent} does not exist")
    if not parent.is_dir():
        raise GruHwError(f"{p}: {parent} is not a directory")
    if p.exists() and not p.is_file():
        raise GruHwError(f"{p}: exists and is not a regular file")
    _probe_dir(parent, p)
    return p


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        if q.is_symlink():  # a dangling link: creating it would fail
            break
        q = q.parent
    return q


def check_output_dir(path: str | Path) -> Path:
    """Check that ``path`` is, or can be created as, a folder where files can be written.

    Raises GruHwError naming the path; creates nothing (missing parents are allowed: the
    nearest existing ancestor must be a writable folder).
    """
    p = Path(path)
    if str(path) == "":
        raise GruHwError("'': not a folder name")
    if p.exists():
        if not p.is_dir():
            raise GruHwError(f"{p}: exists and is not a directory")
        _probe_dir(p, p / "probe")
        return p
    base = _nearest_existing(p)
    if not base.exists():
        raise GruHwError(f"{p}: cannot create it ({base} is a dangling link)")
    if not base.is_dir():
        raise GruHwError(f"{p}: cannot create it, {base} is not a directory")
    _probe_dir(base, base / p.name)
    return p


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temporary file beside it, then it is renamed.

    The temporary file is created with the usual permissions (0666 less the umask) and removed
    if anything fails (the error, or Ctrl-C, propagates).
    """
    p = Path(path)
    tmp = _temp_name(p)
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except OSError as exc:
        raise GruHwError(f"{p}: cannot write in {p.parent} ({_reason(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise GruHwError(f"{p}: cannot write ({_reason(exc)})") from None
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


@contextlib.contextmanager
def output_dir(path: str | Path, replaces: Iterable[str] = ()) -> Iterator[Path]:
    """Build a folder's files in a temporary folder; publish them only on success.

    Yields the temporary folder (beside ``path``, or hidden inside it when it exists). On
    success its files move into ``path`` (created if missing, parents too); files named in
    ``replaces`` that the new output lacks are removed from ``path`` (stale outputs of an
    earlier run). On failure the temporary folder and any folder created for it are removed, and
    ``path`` is untouched.
    """
    shown = check_output_dir(path)
    out = Path(os.path.abspath(shown))  # "." and ".." have no name to put a temporary beside
    if not out.name:
        raise GruHwError(f"{shown}: cannot write into the root folder")
    created: list[Path] = []
    parent = out.parent
    missing = []
    q = parent
    while not q.exists():
        missing.append(q)
        q = q.parent
    tmp = None
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        existed = out.exists()
        # Beside a new folder (renamed into place at the end); inside an existing one (whose
        # parent may not be writable).
        tmp = out / _temp_name(out, ".tmp.d").name if existed else _temp_name(out, ".tmp.d")
        tmp.mkdir()
        yield tmp
        if not existed:
            os.rename(tmp, out)
            tmp = None
        else:
            new = sorted(tmp.iterdir())
            names = {f.name for f in new}
            for f in new:
                os.replace(f, out / f.name)
            for name in replaces:
                stale = out / name
                if name not in names and stale.is_file():
                    stale.unlink()
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp = None
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, GruHwError):
            raise GruHwError(f"{shown}: cannot write ({_reason(exc)})") from None
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def save_outputs(path: str | Path, **arrays: np.ndarray | None) -> None:
    """Write OUTPUTS as ``.npz`` (arrays that are None are left out), atomically."""
    p = check_output_file(path, ".npz")
    data = {k: v for k, v in arrays.items() if v is not None}
    atomic_write(p, lambda f: np.savez(f, **data))
