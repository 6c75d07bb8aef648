"""Float vs post-training quantization vs quantization-aware training on the shipped classifier.

    python bench/qat.py [--epochs 40] [--seeds 1]

For each (weight bits, activation bits): the test accuracy of the float model, of the model
quantized after training (formats from ``choose_spec`` with the inputs calibrated on the train
split: what ``gru-hw ... --weight-bits B --act-bits A --calibrate TRAIN`` computes), and of the
QAT model (:func:`gru_hw.qat.run_qat` on the train split, validation held out from it, the best
epoch exported), measured by gru-hw's golden model on the exported ``model.npz`` +
``qconfig.json``. The last column checks that the QAT module's exact mode equals that golden model
on every test sequence. The test split is never used for training or model selection.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATA, example_model, example_split, machine, table, used_steps

from gru_hw.golden import float_forward, int_forward
from gru_hw.importers import load_model
from gru_hw.qat import QATGRU, run_qat
from gru_hw.quant import QuantSpec, choose_spec, quantize_model

CONFIGS = [(8, 8), (4, 8), (3, 8), (2, 8), (2, 6)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=1, help="QAT runs per row (seeds 0..N-1)")
    args = ap.parse_args()

    model = example_model()
    x, lengths, labels = example_split("test")
    xtr, ltr, _ = example_split("train")
    cal = used_steps(xtr, ltr)

    def acc(y: np.ndarray) -> float:
        return 100 * float(np.mean(y.argmax(1) == labels))

    acc_f = acc(float_forward(model, x, lengths).y)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wb, ab in CONFIGS:
            acc_p = acc(int_forward(quantize_model(model, choose_spec(model, wb, ab,
                                                                      calibration=cal)),
                                    x, lengths).y)
            accs, secs, exact, best = [], [], True, []
            for seed in range(args.seeds):
                out = Path(tmp) / f"w{wb}a{ab}s{seed}"
                t0 = time.perf_counter()
                s = run_qat(DATA / "japanese_vowels_gru.pt", DATA / "japanese_vowels_train.npz",
                            out, weight_bits=wb, act_bits=ab, epochs=args.epochs, seed=seed)
                secs.append(time.perf_counter() - t0)
                best.append(s["best_epoch"])
                back, spec = load_model(out / "model.npz"), QuantSpec.load(out / "qconfig.json")
                gold = int_forward(quantize_model(back, spec), x, lengths).y
                accs.append(acc(gold))
                mine = QATGRU(back, spec=spec)(x, lengths, mode="exact").numpy()
                exact &= bool(np.array_equal(mine, gold))
            a = np.array(accs)
            qat = f"{a.mean():.2f}"
            if len(a) > 1:
                qat += f" ({a.min():.2f}..{a.max():.2f})"
            rows.append([wb, ab, f"{acc_f:.2f}", f"{acc_p:.2f}", qat, f"{a.mean() - acc_f:+.2f}",
                         ",".join(map(str, best)), f"{np.mean(secs):.0f}",
                         "yes" if exact else "NO"])
    print(f"JapaneseVowels test split ({len(labels)} sequences), 12 -> 32 GRU + 9-way head; QAT "
          f"{args.epochs} epochs on 216 train sequences (54 held out for selection), "
          f"{args.seeds} seed(s). Machine: {machine()}\n")
    print(table(["weight bits", "act bits", "float %", "post-training %",
                 "QAT %" + (" (min..max)" if args.seeds > 1 else ""), "QAT vs float (points)",
                 "best epoch", "QAT time s", "exact mode == golden"], rows))


if __name__ == "__main__":
    main()
