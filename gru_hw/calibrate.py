"""Calibration report: ranges, SQNR and saturations per requantization point, and the narrowest
formats that keep accuracy (or output error) within a target.

Used by ``gru-hw info MODEL --calibrate INPUTS`` (with an accuracy or error target).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import GruHwError
from .golden import Progress, _float_batch, check_inputs, int_forward_q, quantize_inputs
from .model import GRUModel
from .quant import QuantSpec, choose_spec, quantize_model, sqnr_db

WEIGHT_BITS = range(4, 17)
ACT_BITS = range(8, 17)


def point_report(model: GRUModel, spec: QuantSpec, x: np.ndarray, lengths: np.ndarray | None) -> list[dict]:
    """Return, per requantization point: format, float range seen, SQNR (dB) and saturations."""
    x, lengths = check_inputs(model, x, lengths)
    ftrace: dict[str, list] = {}
    _float_batch(model, x, lengths, False, None, ftrace)
    qm = quantize_model(model, spec)
    xq, xsat = quantize_inputs(spec, x)
    itrace: dict[str, list] = {}
    res = int_forward_q(qm, xq, lengths, trace=itrace)
    used = np.arange(x.shape[1])[None, :] < lengths[:, None]
    ftrace["x"] = [x[used].ravel()]
    itrace["x"] = [np.ldexp(xq[used].astype(np.float64), -spec.x_fmt.frac_bits).ravel()]
    sats = {"x": xsat, **res.saturations}
    rows = []
    for name in spec.point_names():
        if name not in ftrace:
            continue
        f = np.concatenate(ftrace[name])
        i = np.concatenate(itrace[name])
        rows.append({
            "point": name,
            "format": str(_point_format(spec, name)),
            "range": [float(f.min()), float(f.max())],
            "format_range": [_point_format(spec, name).min_value, _point_format(spec, name).max_value],
            "sqnr_db": sqnr_db(f, i),
            "saturations": int(sats.get(name, 0)),
            "values": int(f.size),
        })
    return rows


def _point_format(spec: QuantSpec, name: str):
    if name == "x":
        return spec.x_fmt
    if name == "head":
        return spec.head.out_fmt
    k, what = name[1:].split(".")
    if what in ("r", "z", "n"):
        return spec.preact_fmt
    if what == "hn":
        return spec.layers[int(k)].hn_fmt
    return spec.h_fmt


def _metric(model, x, lengths, labels, spec, f_y) -> tuple[float, float | None]:
    qm = quantize_model(model, spec)
    xq, _ = quantize_inputs(spec, x)
    y = np.ldexp(int_forward_q(qm, xq, lengths).y.astype(np.float64), -spec.out_fmt.frac_bits)
    err = float(np.abs(y - f_y).max())
    acc = float(np.mean(y.argmax(1) == labels)) if labels is not None else None
    return err, acc


def recommend(model: GRUModel, x: np.ndarray, lengths: np.ndarray | None, *, labels: np.ndarray | None = None,
              target_accuracy_drop: float | None = None, target_error: float | None = None,
              calibration_name: str = "calibration inputs",
              progress: Progress | None = None) -> dict:
    """Find the narrowest (weight_bits, act_bits) meeting the target; return the search record.

    "Narrowest" minimises weight_bits + act_bits, then weight_bits. With labels and an accuracy
    target, the metric is the drop in accuracy (points) against float; otherwise the max absolute
    output error against float. For each activation width the search bisects weight widths (error
    shrinks as widths grow; each found point is still checked directly). Widths whose datapath
    cannot carry the inputs' range count as missing the target. ``progress(done, total)`` is
    called per activation width searched.
    """
    x, lengths = check_inputs(model, x, lengths, where=calibration_name)
    if target_accuracy_drop is not None and labels is None:
        raise GruHwError(f"{calibration_name}: an accuracy target needs 'labels' (N,) in the "
                         "file")
    if target_accuracy_drop is None and target_error is None:
        target_accuracy_drop = 0.5 if labels is not None else None
        target_error = None if labels is not None else 0.01
    f_y, _, _ = _float_batch(model, x, lengths, False, None)
    acc_f = float(np.mean(f_y.argmax(1) == labels)) if labels is not None else None
    used = np.arange(x.shape[1])[None, :] < lengths[:, None]
    cal = x[used]
    cache: dict[tuple[int, int], tuple[float, float | None]] = {}

    too_wide: set[tuple[int, int]] = set()

    def ok(wb: int, ab: int) -> bool:
        if (wb, ab) in too_wide:
            return False
        if (wb, ab) not in cache:
            try:
                spec = choose_spec(model, wb, ab, calibration=cal,
                                   calibration_name=calibration_name)
            except GruHwError:  # the inputs' range does not fit this datapath
                too_wide.add((wb, ab))
                return False
            cache[(wb, ab)] = _metric(model, x, lengths, labels, spec, f_y)
        err, acc = cache[(wb, ab)]
        if target_accuracy_drop is not None:
            return 100 * (acc_f - acc) <= target_accuracy_drop
        return err <= target_error

    best = None
    for i, ab in enumerate(ACT_BITS):
        if progress is not None:
            progress(i, len(ACT_BITS))
        lo, hi = WEIGHT_BITS.start, WEIGHT_BITS.stop - 1
        if not ok(hi, ab):
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid, ab):
                hi = mid
            else:
                lo = mid + 1
        cand = (lo + ab, lo, ab)
        if best is None or cand < best:
            best = cand
    if progress is not None:
        progress(len(ACT_BITS), len(ACT_BITS))
    result = {
        "target": ({"accuracy_drop_points": target_accuracy_drop} if target_accuracy_drop is not None
                   else {"max_abs_error": target_error}),
        "float_accuracy": acc_f,
        "evaluated": [{"weight_bits": wb, "act_bits": ab, "max_abs_error": e,
                       **({"accuracy": a} if a is not None else {})}
                      for (wb, ab), (e, a) in sorted(cache.items())],
    }
    if best is None:
        result["recommended"] = None
    else:
        _, wb, ab = best
        e, a = cache[(wb, ab)]
        result["recommended"] = {"weight_bits": wb, "act_bits": ab, "max_abs_error": e,
                                 **({"accuracy": a} if a is not None else {})}
    return result


def format_report(rows: list[dict], rec: dict | None) -> str:
    """Render the calibration report for humans."""
    lines = ["  calibration (per requantization point):",
             f"    {'point':8} {'format':8} {'range seen':>22} {'SQNR dB':>8} {'saturated':>10}"]
    for r in rows:
        sq = "exact" if math.isinf(r["sqnr_db"]) else f"{r['sqnr_db']:.1f}"
        lines.append(f"    {r['point']:8} {r['format']:8} [{r['range'][0]:9.3f}, {r['range'][1]:9.3f}] "
                     f"{sq:>8} {r['saturations']:>6}/{r['values']}")
    if rec is not None:
        tgt = rec["target"]
        what = (f"accuracy within {tgt['accuracy_drop_points']} points of float"
                if "accuracy_drop_points" in tgt else f"max |y - y_float| <= {tgt['max_abs_error']}")
        r = rec["recommended"]
        if r is None:
            lines.append(f"  recommendation: no width up to 16/16 bits keeps {what}")
        else:
            extra = f", accuracy {100 * r['accuracy']:.2f}%" if "accuracy" in r else ""
            lines.append(f"  recommendation ({what}): {r['weight_bits']}-bit weights, "
                         f"{r['act_bits']}-bit activations, calibrated on these inputs "
                         f"(max |y - y_float| {r['max_abs_error']:.4f}{extra})")
    return "\n".join(lines)
