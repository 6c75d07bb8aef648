#!/usr/bin/env python3
"""Train the project's example model: a GRU classifier on JapaneseVowels (1 layer of 32 by default).

The data come from the copy bundled inside the ``aeon`` package (no network access is needed or
attempted): 12 LPC cepstrum channels, 7..29 time steps, 9 speakers, 270 train / 370 test series.

Pre-processing (done here, outside the model, so the hardware never sees it):

* each channel is standardised with the mean / std of all real (unpadded) TRAIN time steps;
* every series is zero-padded at the end to 29 steps; the true lengths are kept.

By default the model is exactly one ``nn.GRU(12, 32, batch_first=True)`` followed by one
``nn.Linear(32, 9)`` applied to the hidden state at each sequence's true last step. Because the GRU
is causal, the padding after that step has no influence on the result.

``--hidden H [H ...]`` stacks GRU layers of the sizes given (default ``32``: the model above).
Equal sizes give one ``nn.GRU(12, H, num_layers=L)``; differing sizes give a chain of one-layer
``nn.GRU`` modules, saved under the keys one stacked ``nn.GRU`` would use (``gru.weight_ih_l0``,
``gru.weight_ih_l1`` ...) so that the file is a plain "one GRU + one Linear" state_dict, as the
``gru_hw`` PyTorch importer reads it (:func:`flat_state` / :func:`load_flat_state`).

Outputs (default ``gru_hw/data/``, override with ``--out-dir``; ``STEM`` is ``--name``, default
``japanese_vowels``):

* ``STEM_gru.pt``     ``torch.save(model.state_dict())`` (flattened as above if sizes differ)
* ``STEM_test.npz``   ``x`` float32 (370, 29, 12), ``lengths`` int64, ``labels`` int64
* ``STEM_train.npz``  same keys, (270, ...); used for fixed-point calibration
* ``STEM.json``       provenance, normalisation and float test accuracy

Run from the repository root: ``.venv/bin/python examples/train_japanese_vowels.py``; e.g.
``... --hidden 96 96 --name jv_96x2 --out-dir build/models`` for a two-layer 12 -> 96 -> 96 model.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATASET = "JapaneseVowels"
N_CHANNELS = 12
N_CLASSES = 9
MAX_LEN = 29
HIDDEN = 32

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "gru_hw" / "data"


class ChainGRU(nn.Module):
    """Stacked one-layer GRUs of differing hidden sizes; ``forward`` returns what nn.GRU does."""

    def __init__(self, input_size: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = (input_size, *hidden)
        self.layers = nn.ModuleList(
            nn.GRU(sizes[k], sizes[k + 1], batch_first=True) for k in range(len(hidden))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        finals = []
        for layer in self.layers:
            x, h = layer(x)
            finals.append(h)
        return x, finals  # (B, T, H_top); the final states are not used here


class VowelGRU(nn.Module):
    """Stacked GRU layers plus a linear head on the top layer's hidden state at each sequence's
    true last step. ``hidden`` lists the layers' sizes; the default is one layer of 32."""

    def __init__(self, hidden: tuple[int, ...] = (HIDDEN,)) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden sizes must be positive, got {hidden}")
        self.hidden = hidden
        if len(set(hidden)) == 1:
            self.gru = nn.GRU(N_CHANNELS, hidden[0], num_layers=len(hidden), batch_first=True)
        else:
            self.gru = ChainGRU(N_CHANNELS, hidden)
        self.head = nn.Linear(hidden[-1], N_CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, T, H); causal, so steps past the true end do not matter
        idx = (lengths.to(torch.long) - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])
        last = out.gather(1, idx).squeeze(1)  # (B, H) hidden state at step lengths-1
        return self.head(last)


# Key of a ChainGRU parameter: gru.layers.<k>.<kind>_l0  <->  gru.<kind>_l<k> in the saved file.
_CHAIN_KEY = re.compile(r"^gru\.layers\.(\d+)\.(weight_ih|weight_hh|bias_ih|bias_hh)_l0$")
_FLAT_KEY = re.compile(r"^gru\.(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)$")


def flat_state(model: VowelGRU) -> dict[str, torch.Tensor]:
    """The state_dict to save: keys of one (stacked) ``nn.GRU`` named ``gru`` plus ``head``.

    For equal sizes this is ``model.state_dict()`` itself; a ChainGRU's per-module keys are renamed
    to the per-layer keys of a stacked nn.GRU (layer k's input size is layer k-1's hidden size).
    """
    out = {}
    for key, value in model.state_dict().items():
        m = _CHAIN_KEY.match(key)
        if m:
            key = f"gru.{m.group(2)}_l{m.group(1)}"
        out[key] = value.detach().clone().contiguous()
    return out


def load_flat_state(model: VowelGRU, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`flat_state`: load a saved file into ``model`` (strictly)."""
    if isinstance(model.gru, ChainGRU):
        renamed = {}
        for key, value in state.items():
            m = _FLAT_KEY.match(key)
            renamed[f"gru.layers.{m.group(2)}.{m.group(1)}_l0" if m else key] = value
        state = renamed
    model.load_state_dict(state, strict=True)


def describe(hidden: tuple[int, ...]) -> str:
    """The model's structure, in PyTorch terms, for the json."""
    top = f"nn.Linear({hidden[-1]}, {N_CLASSES}) on h at step length-1"
    if len(hidden) == 1:
        return f"nn.GRU({N_CHANNELS}, {hidden[0]}, batch_first=True) -> {top}"
    if len(set(hidden)) == 1:
        return (f"nn.GRU({N_CHANNELS}, {hidden[0]}, num_layers={len(hidden)}, batch_first=True) "
                f"-> {top}")
    sizes = (N_CHANNELS, *hidden)
    chain = " -> ".join(f"nn.GRU({sizes[k]}, {sizes[k + 1]}, batch_first=True)"
                        for k in range(len(hidden)))
    return (f"{chain} -> {top}; saved as one stacked GRU's keys "
            f"(gru.weight_ih_l0 .. gru.bias_hh_l{len(hidden) - 1})")


# --------------------------------------------------------------------------------------- data


def load_split(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Load one split from aeon's bundled files. Never downloads.

    Returns a list of (T_i, 12) float64 arrays and int64 labels 0..8.
    """
    import aeon.datasets
    from aeon.datasets import load_from_ts_file

    path = Path(aeon.datasets.__file__).parent / "data" / DATASET / f"{DATASET}_{split}.ts"
    if not path.is_file():
        raise SystemExit(f"{path} not found: this aeon install does not bundle {DATASET}")
    X, y = load_from_ts_file(str(path))
    series = [np.asarray(s, dtype=np.float64).T for s in X]  # aeon gives (channels, T)
    for s in series:
        if s.shape[1] != N_CHANNELS or not 1 <= s.shape[0] <= MAX_LEN:
            raise SystemExit(f"unexpected series shape {s.shape} in {path}")
        if not np.all(np.isfinite(s)):
            raise SystemExit(f"non-finite values in {path}")
    labels = np.asarray([int(v) - 1 for v in y], dtype=np.int64)  # "1".."9" -> 0..8
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise SystemExit(f"unexpected labels in {path}")
    return series, labels


def pad(
    series: list[np.ndarray], mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise and zero-pad to (N, MAX_LEN, 12) float32; return it with int64 lengths."""
    x = np.zeros((len(series), MAX_LEN, N_CHANNELS), dtype=np.float32)
    lengths = np.zeros(len(series), dtype=np.int64)
    for i, s in enumerate(series):
        x[i, : len(s)] = ((s - mean) / std).astype(np.float32)
        lengths[i] = len(s)
    return x, lengths


# ----------------------------------------------------------------------------------- training


@torch.no_grad()
def accuracy(
    model: nn.Module, x: np.ndarray, lengths: np.ndarray, labels: np.ndarray
) -> tuple[int, float]:
    model.eval()
    logits = model(torch.from_numpy(x), torch.from_numpy(lengths))
    correct = int((logits.argmax(1).numpy() == labels).sum())
    return correct, correct / len(labels)


def train(
    args: argparse.Namespace, x: np.ndarray, lengths: np.ndarray, labels: np.ndarray
) -> VowelGRU:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = VowelGRU(tuple(args.hidden))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(x) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    xt, lt, yt = torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(labels)
    mask = (torch.arange(MAX_LEN).view(1, -1, 1) < lt.view(-1, 1, 1)).float()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            xb = xt[idx]
            if args.noise > 0:  # Gaussian input noise on the real steps only (padding stays 0)
                xb = xb + args.noise * torch.randn(xb.shape, generator=gen) * mask[idx]
            loss = loss_fn(model(xb, lt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 25 == 0 or epoch == 0:
            _, acc = accuracy(model, x, lengths, labels)
            print(f"epoch {epoch + 1:4d}  loss {total / len(xt):.4f}  train acc {acc:.4f}",
                  flush=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--hidden", type=int, nargs="+", default=[HIDDEN], metavar="H",
                    help="hidden size of each stacked GRU layer, bottom first "
                    "(default: %(default)s)")
    ap.add_argument("--name", default="japanese_vowels", metavar="STEM",
                    help="output file stem: STEM_gru.pt, STEM_{test,train}.npz, STEM.json "
                    "(default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--noise", type=float, default=0.1, help="std of training input noise")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if min(args.hidden) < 1:
        ap.error(f"--hidden: sizes must be positive, got {args.hidden}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        ap.error(f"--name: {args.name!r} is not a plain file stem (letters, digits, . _ -)")
    hidden = tuple(args.hidden)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    train_series, y_train = load_split("TRAIN")
    test_series, y_test = load_split("TEST")
    steps = np.concatenate(train_series, axis=0)  # real TRAIN steps only, no padding
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    x_train, len_train = pad(train_series, mean, std)
    x_test, len_test = pad(test_series, mean, std)

    t0 = time.perf_counter()
    model = train(args, x_train, len_train, y_train)
    train_seconds = time.perf_counter() - t0

    train_correct, train_acc = accuracy(model, x_train, len_train, y_train)
    test_correct, test_acc = accuracy(model, x_test, len_test, y_test)
    print(f"train acc {train_acc:.4f}  test acc {test_acc:.4f} ({test_correct}/{len(y_test)})  "
          f"time {train_seconds:.1f} s")

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name
    names = {k: f"{stem}{suffix}" for k, suffix in
             (("model", "_gru.pt"), ("test", "_test.npz"), ("train", "_train.npz"),
              ("meta", ".json"))}
    state = flat_state(model)
    torch.save(state, out / names["model"])
    np.savez_compressed(out / names["test"], x=x_test, lengths=len_test, labels=y_test)
    np.savez_compressed(out / names["train"], x=x_train, lengths=len_train, labels=y_train)

    # Re-measure from the saved file so the recorded number is what a consumer will reproduce.
    reloaded = VowelGRU(hidden)
    load_flat_state(reloaded, torch.load(out / names["model"], weights_only=True))
    re_correct, re_acc = accuracy(reloaded, x_test, len_test, y_test)
    assert re_correct == test_correct, (re_correct, test_correct)

    import aeon

    model_meta = {
        "class": "VowelGRU",
        "structure": describe(hidden),
        "hidden_size": hidden[-1],
    }
    if len(hidden) > 1:  # one-layer models keep the original keys only
        model_meta["hidden_sizes"] = list(hidden)
    model_meta["max_abs_weight"] = {k: float(v.abs().max()) for k, v in state.items()}
    meta = {
        "dataset": DATASET,
        "source": f"aeon {aeon.__version__} (bundled "
        f"aeon/datasets/data/{DATASET}/{DATASET}_{{TRAIN,TEST}}.ts)",
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "n_channels": N_CHANNELS,
        "n_classes": N_CLASSES,
        "max_len": MAX_LEN,
        "class_labels": "dataset labels '1'..'9' mapped to 0..8",
        "padding": "zero-padded at the end to max_len; true lengths in the npz 'lengths' key",
        "normalisation": {
            "description": "x_std = (x_raw - mean) / std per channel; "
            "stats over all real TRAIN steps",
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        },
        "model": model_meta,
        "float_test_accuracy": re_acc,
        "float_test_correct": re_correct,
        "float_train_accuracy": train_acc,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW lr={args.lr} weight_decay={args.weight_decay}, "
        "OneCycleLR, clip_grad_norm 1.0",
        "label_smoothing": args.label_smoothing,
        "train_input_noise_std": args.noise,
        "seed": args.seed,
        "threads": args.threads,
        "training_time_s": round(train_seconds, 2),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    (out / names["meta"]).write_text(json.dumps(meta, indent=2) + "\n")
    for name in names.values():
        print(f"wrote {out / name} ({(out / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
