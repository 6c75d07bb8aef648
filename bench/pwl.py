"""PWL sigmoid/tanh max error against segment count and output width, every input checked.

Prints a markdown table, then short notes.

    python bench/pwl.py
"""

from __future__ import annotations

import inspect

from common import table

from gru_hw.activations import design_pwl
from gru_hw.fixed import QFormat
from gru_hw.quant import PWLParams, _pwl_spec, choose_spec


def main() -> None:
    rows = []
    for bits in (16, 12, 8):
        for seg_log2 in (2, 3, 4, 5, 6):
            row = [bits, 2 << seg_log2]
            for func, rlog2 in (("sigmoid", 3), ("tanh", 2)):
                spec = _pwl_spec(func, PWLParams(rlog2, seg_log2), QFormat(5, bits - 1), QFormat(1, bits - 1))
                t = design_pwl(spec)
                row += [f"{t.max_error:.5f}", f"{t.slope_bits}+{t.icpt_bits}"]
            rows.append(row)
    print(table(["act bits B", "segments", "sigmoid err", "sigmoid coef bits (slope+icpt)",
                 "tanh err", "tanh coef bits"], rows))
    default = 2 << inspect.signature(choose_spec).parameters["seg_log2"].default
    print("\nMax |error| over every representable input (inputs Q5.(B-1), outputs Q1.(B-1)); "
          "sigmoid on [-8, 8), tanh on [-4, 4), minimax segments, exactly symmetric. "
          f"gru-hw's default is {default} segments. For scale (quoted figures, not measured "
          "here): a 1024-entry lookup table gives 0.0049 / 0.0088, a 64-segment chord "
          "PWL 0.00075 / 0.0015.")

if __name__ == "__main__":
    main()
