"""pytest helpers shared by the simulation tests (imported by tests only)."""

from __future__ import annotations

import os
from pathlib import Path

from .runner import ToolMissing, check_tool


def require_tool(simulator: str) -> None:
    """Fail (when $CI is set) or skip the calling test if the simulator is not installed."""
    import pytest

    if simulator == "amaranth":
        return
    try:
        check_tool(simulator)
    except ToolMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (required in CI)")
        pytest.skip(str(exc))


def build_root(config, tmp_path_factory) -> Path:
    """Return the folder for generated cores and simulator builds shared by a test session.

    It lives in pytest's cache (``.pytest_cache/d/gru-hw-sim``) so later sessions reuse builds:
    every folder in it is named by a hash of what it was built from, so nothing stale is reused.
    Without the cache plugin, a fresh temporary folder.
    """
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("gru-hw-sim"))
    return tmp_path_factory.mktemp("gru-hw-sim")
