"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import settings

from gru_hw.model import DenseHead, GRULayer, GRUModel


# Property tests: deterministic in CI (a fixed seed per test, no example database), random
# elsewhere. `HYPOTHESIS_PROFILE=thorough` raises the example count to 10,000 for the tests that
# ask for at least the profile's count (the fixed-point properties).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", print_blob=True)
settings.register_profile("thorough", print_blob=True, max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "random"))


def require(module: str):
    """Import an optional dependency; fail (in CI) or skip (elsewhere) when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required in CI but cannot be imported: {exc}")
        pytest.skip(f"{module} not installed")


def random_model(rng: np.random.Generator, input_size: int, hidden: int | list[int], *,
                 reset_after: bool = True, head: int | None = None, scale: float = 0.5) -> GRUModel:
    """Return a random GRU model (weights ~ N(0, scale / sqrt(fan_in)))."""
    hiddens = [hidden] if isinstance(hidden, int) else list(hidden)
    layers = []
    i = input_size
    for h in hiddens:
        layers.append(GRULayer(
            rng.normal(0, scale * 2 / np.sqrt(i), (3 * h, i)),
            rng.normal(0, scale * 2 / np.sqrt(h), (3 * h, h)),
            rng.normal(0, scale * 0.5, 3 * h),
            rng.normal(0, scale * 0.5, 3 * h),
        ))
        i = h
    dense = None
    if head:
        dense = DenseHead(rng.normal(0, 1 / np.sqrt(i), (head, i)), rng.normal(0, 0.2, head))
    return GRUModel(tuple(layers), reset_after, dense)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
