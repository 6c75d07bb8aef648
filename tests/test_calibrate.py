"""Calibration report and format recommendation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import random_model
from gru_hw.calibrate import point_report, recommend
from gru_hw.cli import main
from gru_hw.golden import float_forward, int_forward
from gru_hw.quant import choose_spec, quantize_model


def test_point_report_covers_every_point(rng):
    model = random_model(rng, 3, [6, 4], reset_after=False, head=3)
    x = rng.normal(0, 2, (20, 8, 3))
    spec = choose_spec(model, 10, 10)
    rows = point_report(model, spec, x, None)
    assert [r["point"] for r in rows] == spec.point_names()
    for r in rows:
        assert r["range"][0] <= r["range"][1]
        assert 10 < r["sqnr_db"] < 120 or math.isinf(r["sqnr_db"])
    # ranges are the float model's: the top layer's h stays within (-1, 1)
    h_row = next(r for r in rows if r["point"] == "l1.h")
    assert -1 < h_row["range"][0] and h_row["range"][1] < 1


def test_saturations_reported_where_range_is_lost(rng):
    model = random_model(rng, 2, 3)
    spec = choose_spec(model, 12, 12)  # inputs Q4.8: ±8
    x = rng.normal(0, 1, (5, 4, 2))
    x[0, 0, 0] = 30.0
    rows = {r["point"]: r for r in point_report(model, spec, x, None)}
    assert rows["x"]["saturations"] == 1
    assert rows["x"]["range"][1] == 30.0


def test_recommendation_meets_target_and_is_narrowest_per_act_width(rng):
    model = random_model(rng, 3, 5, head=2)
    x = rng.normal(0, 1, (30, 10, 3))
    rec = recommend(model, x, None, target_error=0.05)
    r = rec["recommended"]
    assert r is not None
    # check the claim independently
    spec = choose_spec(model, r["weight_bits"], r["act_bits"], calibration=x.reshape(-1, 3))
    err = np.abs(int_forward(quantize_model(model, spec), x).y - float_forward(model, x).y).max()
    assert err <= 0.05 and err == pytest.approx(r["max_abs_error"])
    if r["weight_bits"] > 4:
        spec = choose_spec(model, r["weight_bits"] - 1, r["act_bits"], calibration=x.reshape(-1, 3))
        err = np.abs(int_forward(quantize_model(model, spec), x).y - float_forward(model, x).y).max()
        assert err > 0.05


def test_info_calibrate_cli(tmp_path, rng, capsys):
    model = random_model(rng, 3, 4, head=3)
    model.save_npz(tmp_path / "m.npz")
    x = rng.normal(0, 1, (30, 6, 3))
    labels = float_forward(model, x).y.argmax(1)
    np.savez(tmp_path / "cal.npz", x=x, labels=labels)
    code = main(["info", str(tmp_path / "m.npz"), "--calibrate", str(tmp_path / "cal.npz"),
                 "--target-accuracy-drop", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "SQNR" in out and "recommendation (accuracy within 0.0 points" in out
    code = main(["info", str(tmp_path / "m.npz"), "--target-error", "0.1"])
    assert code == 2 and "need --calibrate" in capsys.readouterr().err



def test_raw_scale_calibration_and_messages(rng, tmp_path):
    """x ~ N(0, 15000) (16-bit audio): integer bits, a working report and recommendation; a range
    the datapath cannot carry is an error naming the inputs and the range."""
    from gru_hw.errors import GruHwError

    model = random_model(rng, 3, 4, head=2)
    x = rng.normal(0, 15000, (8, 5, 3))
    spec = choose_spec(model, calibration=x.reshape(-1, 3), calibration_name="audio.npz")
    assert spec.x_fmt.frac_bits < 0 and spec.x_fmt.width == 16
    rows = {r["point"]: r for r in point_report(model, spec, x, None)}
    assert rows["x"]["saturations"] == 0
    calls = []
    rec = recommend(model, x, None, target_error=0.05, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1]
    if rec["recommended"] is not None:
        assert rec["recommended"]["max_abs_error"] <= 0.05
    with pytest.raises(GruHwError, match=r"^audio.npz: values reach \|x\| = 1e\+300"):
        choose_spec(model, calibration=np.full((2, 3), 1e300), calibration_name="audio.npz")
    with pytest.raises(GruHwError, match=r"^cal.npz: an accuracy target needs 'labels'"):
        recommend(model, x, None, target_accuracy_drop=1.0, calibration_name="cal.npz")
