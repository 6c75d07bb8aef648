"""The shipped example model (gru_hw/data/, produced by examples/train_japanese_vowels.py).

Checks the data files' shapes, dtypes and pre-processing, and re-measures the float test accuracy
with PyTorch from the shipped state_dict; it must equal the number recorded in the json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "gru_hw" / "data"
MODEL = DATA / "japanese_vowels_gru.pt"
META = DATA / "japanese_vowels.json"
SPLITS = {"train": 270, "test": 370}
T, I, H, C = 29, 12, 32, 9


def _torch():
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch is required in CI to check the shipped example model")
        pytest.skip("torch is not installed")
    return torch


def _load_npz(split: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"japanese_vowels_{split}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _meta() -> dict:
    return json.loads(META.read_text())


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_npz_shapes_and_dtypes(split):
    d = _load_npz(split)
    n = SPLITS[split]
    assert sorted(d) == ["labels", "lengths", "x"]
    assert d["x"].dtype == np.float32 and d["x"].shape == (n, T, I)
    assert d["lengths"].dtype == np.int64 and d["lengths"].shape == (n,)
    assert d["labels"].dtype == np.int64 and d["labels"].shape == (n,)
    assert np.all(np.isfinite(d["x"]))
    assert d["lengths"].min() >= 1 and d["lengths"].max() <= T
    assert set(np.unique(d["labels"]).tolist()) == set(range(C))
    pad = np.arange(T)[None, :] >= d["lengths"][:, None]  # (n, T) True past the true end
    assert not np.any(d["x"][pad]), "padding must be exactly zero"
    assert d["x"].nbytes < 1_000_000


def test_train_split_is_standardised():
    d = _load_npz("train")
    real = np.arange(T)[None, :] < d["lengths"][:, None]
    steps = d["x"][real].astype(np.float64)  # (total real steps, 12)
    np.testing.assert_allclose(steps.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(steps.std(axis=0), 1.0, atol=1e-5)
    norm = _meta()["normalisation"]
    assert len(norm["mean"]) == I and len(norm["std"]) == I
    assert all(s > 0 for s in norm["std"])


def test_metadata_fields():
    meta = _meta()
    for key in ("dataset", "source", "normalisation", "float_test_accuracy", "epochs", "seed",
                "training_time_s", "torch_version"):
        assert key in meta, key
    assert meta["dataset"] == "JapaneseVowels"
    assert meta["source"].startswith("aeon ")


def test_shipped_model_accuracy_matches_record():
    torch = _torch()
    from torch import nn

    class VowelGRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(I, H, batch_first=True)
            self.head = nn.Linear(H, C)

        def forward(self, x, lengths):
            out, _ = self.gru(x)
            idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])
            return self.head(out.gather(1, idx).squeeze(1))

    state = torch.load(MODEL, map_location="cpu", weights_only=True)
    assert list(state) == [
        "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0",
        "head.weight", "head.bias",
    ]
    for v in state.values():
        assert v.dtype == torch.float32 and bool(torch.isfinite(v).all())
    model = VowelGRU()
    model.load_state_dict(state, strict=True)
    model.eval()

    d = _load_npz("test")
    with torch.no_grad():
        logits = model(torch.from_numpy(d["x"]), torch.from_numpy(d["lengths"]))
    correct = int((logits.argmax(1).numpy() == d["labels"]).sum())
    acc = correct / len(d["labels"])

    meta = _meta()
    assert correct == meta["float_test_correct"]
    assert acc == meta["float_test_accuracy"]
    assert acc >= 0.9
