"""Accuracy of the shipped classifier against bit width, and max |h - h_float| over all steps.

Prints a markdown table, then short notes.

    python bench/accuracy.py
"""

from __future__ import annotations

import numpy as np
from common import example_model, example_split, table, used_steps

from gru_hw.golden import float_forward, int_forward
from gru_hw.quant import choose_spec, quantize_model

CONFIGS = [(16, 16), (12, 16), (12, 12), (10, 12), (8, 16), (8, 12), (8, 10), (8, 9), (8, 8), (6, 10), (6, 8),
           (4, 8)]


def main() -> None:
    model = example_model()
    x, lengths, labels = example_split("test")
    xtr, ltr, _ = example_split("train")
    cal = used_steps(xtr, ltr)
    f = float_forward(model, x, lengths, sequence=True)
    acc_f = float(np.mean(f.y.argmax(1) == labels))
    rows = []
    for wb, ab in CONFIGS:
        qm = quantize_model(model, choose_spec(model, wb, ab, calibration=cal))
        r = int_forward(qm, x, lengths, sequence=True)
        acc = float(np.mean(r.y.argmax(1) == labels))
        sats = sum(v for k, v in r.saturations.items())
        rows.append([wb, ab, f"{100 * acc:.2f}", f"{100 * (acc - acc_f):+.2f}",
                     f"{np.abs(r.h - f.h).max():.5f}", f"{np.abs(r.y - f.y).max():.5f}", sats])
    print(table(["weight bits", "act bits", "accuracy %", "vs float (points)", "max abs h - h_float",
                 "max abs logit err", "saturations"], rows))
    print(f"\nJapaneseVowels test split ({len(labels)} sequences, {lengths.min()}-{lengths.max()} "
          f"steps), float accuracy {100 * acc_f:.2f}%. Formats from `choose_spec` with the inputs "
          "calibrated on the train split; the errors are over every step of every test sequence; "
          "saturations: requantizations that clipped, over the whole test split.")

if __name__ == "__main__":
    main()
