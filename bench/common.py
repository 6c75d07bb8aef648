"""Helpers shared by the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "gru_hw" / "data"
sys.path.insert(0, str(ROOT))


def example_model():
    """The shipped JapaneseVowels classifier (12 -> 32 GRU, 9-way head)."""
    from gru_hw.importers import load_model

    return load_model(DATA / "japanese_vowels_gru.pt")


def example_split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, lengths, labels) of the shipped 'train' or 'test' split."""
    d = np.load(DATA / f"japanese_vowels_{name}.npz")
    return d["x"].astype(np.float64), d["lengths"], d["labels"]


def used_steps(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return the (M, I) array of the steps in use (for calibration)."""
    return x[np.arange(x.shape[1])[None, :] < lengths[:, None]]


def machine() -> str:
    """One line describing this machine: CPU, cores, memory, OS and Python."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        if names:
            cpu = f"{platform.machine()} {names[0]}"
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal:")))
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def versions(*packages: str) -> str:
    """'name version, ...' of the installed Python packages named (those not installed: left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in packages:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def table(headers: list[str], rows: list[list]) -> str:
    """Render a markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
