#!/usr/bin/env python3
"""Quantization-aware training of the example classifier down to 2-bit weights, bit-exact.

The shipped JapaneseVowels model (``gru_hw/data/japanese_vowels_gru.pt``, a 12 -> 32 GRU with a
9-way head, float test accuracy 96.2 %) loses most of its accuracy when its weights are rounded
to 2 bits after training. This script fine-tunes it with the hardware's own arithmetic in the
loop (:func:`gru_hw.qat.run_qat`): every requantization point, rounding and saturation, and the
PWL sigmoid / tanh tables are in the training graph, so the validation accuracy it reports is the
accuracy of the integer model the generated Verilog computes.

It then reads the exported files back with gru-hw's own importer and quantizer, measures the
test accuracy of float, post-training and QAT models, checks that the QAT module's exact mode
equals the golden model on every test sequence, and prints the command that runs the exported
model through the generated hardware:

    .venv/bin/python examples/qat_japanese_vowels.py [-o qat-out] [--weight-bits 2] [--act-bits 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "gru_hw" / "data"

from gru_hw.golden import float_forward, int_forward  # noqa: E402
from gru_hw.importers import load_model  # noqa: E402
from gru_hw.qat import run_qat  # noqa: E402
from gru_hw.quant import QuantSpec, choose_spec, quantize_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("qat-out"))
    ap.add_argument("--weight-bits", type=int, default=2)
    ap.add_argument("--act-bits", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from tqdm import tqdm

    model_path = DATA / "japanese_vowels_gru.pt"
    train_path = DATA / "japanese_vowels_train.npz"
    test_path = DATA / "japanese_vowels_test.npz"
    t0 = time.perf_counter()
    with tqdm(total=args.epochs, unit="epoch", desc="QAT", leave=False) as bar:
        summary = run_qat(model_path, train_path, args.output, weight_bits=args.weight_bits,
                          act_bits=args.act_bits, epochs=args.epochs, seed=args.seed,
                          progress=lambda done, total: bar.update(done - bar.n))
    seconds = time.perf_counter() - t0

    print(f"{args.weight_bits}-bit weights, {args.act_bits}-bit activations; validation: "
          f"{summary['validation']}")
    print(f"validation accuracy: float {100 * summary['float']:.1f} %, post-training "
          f"{100 * summary['ptq']:.1f} %")
    print("epoch  train loss  val QAT (exact) %  val float weights %")
    for h in summary["history"]:
        loss = "-" if h["train_loss"] is None else f"{h['train_loss']:.4f}"
        print(f"{h['epoch']:5d}  {loss:>10}  {100 * h['val_qat']:17.1f}  "
              f"{100 * h['val_float']:19.1f}")
    print(f"kept epoch {summary['best_epoch']}; trained in {seconds:.1f} s")

    # Test accuracy, through gru-hw's own readers of the exported files.
    test = np.load(test_path)
    x, lengths, labels = test["x"], test["lengths"], test["labels"]
    train = np.load(train_path)
    cal = train["x"][np.arange(train["x"].shape[1])[None, :] < train["lengths"][:, None]]
    original = load_model(model_path)
    ptq = quantize_model(original, choose_spec(original, args.weight_bits, args.act_bits,
                                               calibration=cal))
    exported = load_model(summary["files"]["model"])
    spec = QuantSpec.load(summary["files"]["qconfig"])
    golden = int_forward(quantize_model(exported, spec), x, lengths)

    def acc(y: np.ndarray) -> float:
        return 100 * float(np.mean(y.argmax(1) == labels))

    acc_float = acc(float_forward(original, x, lengths).y)
    print(f"test accuracy ({len(labels)} sequences): float {acc_float:.1f} %, "
          f"post-training {acc(int_forward(ptq, x, lengths).y):.1f} %, QAT {acc(golden.y):.1f} %")

    # The QAT module's exact mode on the exported files is the golden model, bit for bit.
    from gru_hw.qat import QATGRU

    module = QATGRU(exported, spec=spec)
    y = module(x, lengths, mode="exact").numpy()
    assert np.array_equal(y, golden.y), "exact mode differs from golden"
    np.savez(args.output / "test_outputs.npz", y=y)
    print(f"exact mode == golden on all {len(labels)} test sequences; outputs in "
          f"{args.output / 'test_outputs.npz'}")
    print("run the generated hardware on them (exit 0 = every output equals golden):")
    print(f"  .venv/bin/gru-hw simulate {summary['files']['model']} {test_path} -o /tmp/q.npz "
          f"--qconfig {summary['files']['qconfig']} --simulator verilator --lanes 8")


if __name__ == "__main__":
    main()
