"""The demo's figure: PWL curves and their error, accuracy against bit width, Fmax/resources vs lanes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .quant import QuantSpec


def draw(path: Path, spec: QuantSpec, sweep: list[dict], acc_float: float, builds: list[dict]) -> None:
    """Write the four-panel PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax_c, ax_e, ax_a, ax_b = axes.ravel()
    for table, ref, color in ((spec.sigmoid_table(), lambda v: 1 / (1 + np.exp(-v)), "C0"),
                              (spec.tanh_table(), np.tanh, "C1")):
        fmt = table.spec.in_fmt
        a = np.arange(-(10 << fmt.frac_bits), 10 << fmt.frac_bits, dtype=np.int64)
        xv = np.ldexp(a.astype(float), -fmt.frac_bits)
        y = np.ldexp(table.eval_int(a).astype(float), -table.spec.out_fmt.frac_bits)
        name = table.spec.func
        ax_c.plot(xv, y, color=color, label=f"{name} PWL ({table.spec.segments} segments)")
        ax_c.plot(xv, ref(xv), color="k", lw=0.6, ls="--")
        ax_e.plot(xv, y - ref(xv), color=color, lw=0.6,
                  label=f"{name}: max |err| {table.max_error:.5f}")
    ax_c.set_title("PWL activations (dashed: exact)")
    ax_c.legend(loc="upper left")
    ax_c.grid(alpha=0.3)
    ax_e.set_title("PWL error, every representable input")
    ax_e.legend(loc="upper right")
    ax_e.grid(alpha=0.3)

    labels = [f"{d['weight_bits']}/{d['act_bits']}" for d in sweep]
    accs = [100 * d["accuracy"] for d in sweep]
    ax_a.bar(labels, accs, color="C2")
    ax_a.axhline(100 * acc_float, color="k", ls="--", lw=1, label=f"float {100 * acc_float:.2f}%")
    ax_a.set_ylim(min(accs + [100 * acc_float]) - 3, 100)
    ax_a.set_xlabel("weight bits / activation bits")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_title("JapaneseVowels accuracy vs bit width")
    ax_a.legend(loc="lower left")
    ax2 = ax_a.twinx()
    ax2.plot(labels, [d["max_h_err"] for d in sweep], "o-", color="C3")
    ax2.set_yscale("log")
    ax2.set_ylabel("max |h - h_float|", color="C3")

    builds = [b for b in builds if "fmax_mhz" in b]
    if builds:
        lanes = [b["lanes"] for b in builds]
        ax_b.plot(lanes, [b["fmax_mhz"] for b in builds], "o-", color="C0", label="Fmax (MHz)")
        ax_b.set_xlabel("lanes (parallel multipliers)")
        ax_b.set_ylabel("Fmax after routing (MHz)")
        ax_b.set_xticks(lanes)
        ax3 = ax_b.twinx()
        for key, color in (("ICESTORM_LC", "C1"), ("ICESTORM_DSP", "C2"), ("ICESTORM_RAM", "C4")):
            vals = [100 * b["utilization"].get(key, {}).get("used", 0)
                    / max(1, b["utilization"].get(key, {}).get("available", 1)) for b in builds]
            ax3.plot(lanes, vals, "s--", color=color, label=f"{key} %")
        ax3.set_ylabel("utilization (%)")
        ax3.set_ylim(0, 105)
        h1, l1 = ax_b.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax_b.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8)
        ax_b.set_title("iCEBreaker (UP5K): Fmax and resources vs lanes")
    else:
        ax_b.text(0.5, 0.5, "board builds skipped (--quick)", ha="center", va="center")
        ax_b.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
