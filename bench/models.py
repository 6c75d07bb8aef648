"""Larger JapaneseVowels GRU classifiers for the benchmarks, trained on demand.

``ensure_models(out_dir, specs)`` trains every model of ``specs`` that ``out_dir`` does not hold yet
(or holds with other settings), by running ``examples/train_japanese_vowels.py`` with
``--hidden ... --name ... --seed 0``, and returns the ``.pt`` path of each. A model ``NAME`` is the
four files ``NAME_gru.pt``, ``NAME_test.npz``, ``NAME_train.npz`` and ``NAME.json`` (the json is
written last, so a model is complete when it and the .pt exist); the trainer's output goes to
``NAME.log``. The default directory, ``build/models/``, is git-ignored.

    python bench/models.py [--out-dir build/models] [--epochs 200] [--threads 2] [--force]

prints each model's shape, float test accuracy and training time (both from ``NAME.json``), and
checks that the project's importer reads the file with the intended layer sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from common import ROOT

TRAINER = ROOT / "examples" / "train_japanese_vowels.py"
DEFAULT_OUT = ROOT / "build" / "models"
INPUTS = 12  # JapaneseVowels channels

#: (name, hidden sizes bottom first): single-layer 12 -> H models and a two-layer 12 -> 96 -> 96.
SPECS: list[tuple[str, list[int]]] = [
    ("h64", [64]),
    ("h96", [96]),
    ("h128", [128]),
    ("h160", [160]),
    ("h96x2", [96, 96]),
]
EPOCHS = 200  # the shipped model's recipe
SEED = 0


def model_path(out_dir: str | Path, name: str) -> Path:
    """The state_dict file of model ``name`` in ``out_dir``."""
    return Path(out_dir) / f"{name}_gru.pt"


def meta_path(out_dir: str | Path, name: str) -> Path:
    """The trainer's json (accuracy, training time, settings) of model ``name``."""
    return Path(out_dir) / f"{name}.json"


def split_path(out_dir: str | Path, name: str, split: str) -> Path:
    """The ``'test'`` or ``'train'`` data of model ``name`` (the same data for every model)."""
    return Path(out_dir) / f"{name}_{split}.npz"


def load_meta(out_dir: str | Path, name: str) -> dict | None:
    """The json of model ``name``, or None when it is missing or unreadable."""
    try:
        return json.loads(meta_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None


def hidden_sizes(meta: dict) -> list[int]:
    """The layer sizes recorded in a trainer json (one-layer files record only hidden_size)."""
    m = meta.get("model", {})
    return [int(h) for h in m.get("hidden_sizes", [m.get("hidden_size", -1)])]


def _up_to_date(out_dir: Path, name: str, hidden: Sequence[int], epochs: int, seed: int) -> bool:
    meta = load_meta(out_dir, name)
    if meta is None or not model_path(out_dir, name).is_file():
        return False
    if not all(split_path(out_dir, name, s).is_file() for s in ("test", "train")):
        return False
    return (hidden_sizes(meta) == list(hidden) and meta.get("epochs") == epochs
            and meta.get("seed") == seed)


def ensure_models(
    out_dir: str | Path = DEFAULT_OUT,
    specs: Iterable[tuple[str, Sequence[int]]] = SPECS,
    *,
    epochs: int = EPOCHS,
    seed: int = SEED,
    threads: int = 2,
    force: bool = False,
    verbose: bool = True,
) -> dict[str, Path]:
    """Train the models of ``specs`` missing from ``out_dir``; return {name: path of NAME_gru.pt}.

    A model present with other layer sizes, epochs or seed is trained again; ``force`` retrains
    all. Training failures raise ``RuntimeError`` naming the log file.
    """
    out = Path(out_dir).resolve()  # the trainer runs from the repository root
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, hidden in specs:
        hidden = [int(h) for h in hidden]
        if force or not _up_to_date(out, name, hidden, epochs, seed):
            log = out / f"{name}.log"
            cmd = [sys.executable, str(TRAINER), "--out-dir", str(out), "--name", name,
                   "--hidden", *map(str, hidden), "--epochs", str(epochs), "--seed", str(seed),
                   "--threads", str(threads)]
            if verbose:
                print(f"training {name} (12 -> {' -> '.join(map(str, hidden))}, {epochs} epochs); "
                      f"log: {log}", flush=True)
            meta_path(out, name).unlink(missing_ok=True)  # no stale json if the run fails
            t0 = time.perf_counter()
            with open(log, "w") as f:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            if rc != 0 or not _up_to_date(out, name, hidden, epochs, seed):
                raise RuntimeError(f"training {name} failed (exit code {rc}); see {log}")
            if verbose:
                print(f"  done in {time.perf_counter() - t0:.1f} s wall", flush=True)
        paths[name] = model_path(out, name)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="retrain even the models present")
    args = ap.parse_args()

    paths = ensure_models(args.out_dir, SPECS, epochs=args.epochs, threads=args.threads,
                          force=args.force)

    from gru_hw.importers import load_model

    print(f"\n{'model':8} {'shape':24} {'params':>7} {'file bytes':>10} {'float test acc':>22} "
          f"{'train time':>10}")
    for name, hidden in SPECS:
        meta = load_meta(args.out_dir, name)
        model = load_model(paths[name])
        sizes = [model.input_size] + [layer.hidden_size for layer in model.layers]
        if sizes != [INPUTS, *hidden] or model.head is None or model.head.output_size != 9:
            raise SystemExit(f"{paths[name]}: read as {model.describe()}, expected "
                             f"12 -> {' -> '.join(map(str, hidden))} -> dense 9")
        shape = " -> ".join(map(str, sizes)) + " -> 9"
        acc = (f"{100 * meta['float_test_accuracy']:.2f}% "
               f"({meta['float_test_correct']}/{meta['n_test']})")
        print(f"{name:8} {shape:24} {model.num_parameters:>7} {paths[name].stat().st_size:>10} "
              f"{acc:>22} {meta['training_time_s']:>8.1f} s")
    print(f"\n{len(paths)} models in {args.out_dir}; training: {args.epochs} epochs, seed {SEED}, "
          f"{args.threads} threads (training time: the trainer's own measurement, data loading "
          "excluded; from the json, so from the run that trained the model).")


if __name__ == "__main__":
    main()
