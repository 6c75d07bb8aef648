"""QuantSpec: format choice, JSON round trip, validation messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import random_model
from gru_hw.errors import GruHwError
from gru_hw.fixed import Overflow, QFormat, Rounding
from gru_hw.golden import int_forward
from gru_hw.quant import PointMode, QuantSpec, accumulator_ranges, choose_spec, quantize_model


@pytest.mark.parametrize("reset_after", [True, False])
def test_json_round_trip(tmp_path, rng, reset_after):
    model = random_model(rng, 4, [6, 5], reset_after=reset_after, head=3)
    spec = choose_spec(model, 9, 11).with_point("l1.h", PointMode(Rounding.HALF_EVEN, Overflow.WRAP))
    path = tmp_path / "q.json"
    spec.save(path)
    back = QuantSpec.load(path)
    assert back == spec
    assert back.mode("l1.h") == PointMode(Rounding.HALF_EVEN, Overflow.WRAP)
    data = json.loads(path.read_text())
    assert set(data["points"]) == set(spec.point_names())


def test_default_formats_follow_the_weights(rng):
    model = random_model(rng, 3, 4, head=2)
    spec = choose_spec(model)
    lf = spec.layers[0]
    w_max = np.abs(model.layers[0].w_ih).max()
    assert w_max < 2.0 ** (lf.w_ih_fmt.int_bits - 1) and w_max >= 2.0 ** (lf.w_ih_fmt.int_bits - 2)
    assert lf.w_ih_fmt.width == spec.weight_bits == 16
    assert spec.h_fmt == QFormat(1, 15) and spec.x_fmt == QFormat(4, 12)


def test_weight_bound_formats_never_saturate(rng):
    """hn and the head's output have formats derived from weight bounds: extreme inputs never saturate."""
    model = random_model(rng, 3, 5, head=4, scale=3.0)
    spec = choose_spec(model, 8, 10)
    qm = quantize_model(model, spec)
    x = rng.choice([-50.0, 50.0], size=(64, 12, 3))
    sats = int_forward(qm, x).saturations
    assert sats["x"] > 0
    assert sats.get("l0.hn", 0) == 0 and sats.get("head", 0) == 0


def test_calibration_sets_input_range(rng):
    model = random_model(rng, 3, 4)
    spec = choose_spec(model, act_bits=12, calibration=rng.uniform(-20, 20, (10, 3)))
    assert spec.x_fmt == QFormat(6, 6) and spec.calibrated


def test_accumulator_ranges_are_exact_extremes(rng):
    model = random_model(rng, 3, 2)
    qm = quantize_model(model, choose_spec(model, 6, 8))
    lo, hi = accumulator_ranges(qm, 0)["acc_x"]
    # brute force over the corners of the input box
    fmt = qm.spec.x_fmt
    corners = np.array(np.meshgrid(*[[fmt.min_int, fmt.max_int]] * 3)).reshape(3, -1).T
    acc = corners @ qm.layers[0].w_ih.T + qm.layers[0].b_ih
    assert (lo, hi) == (acc.min(), acc.max())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not a gru-hw quantization spec"),
    (lambda d: d.update(version=99), "unsupported version 99"),
    (lambda d: d.pop("x_fmt"), "missing key 'x_fmt'"),
    (lambda d: d.update(x_fmt=[1, "a"]), r"x_fmt: expected \[int_bits, frac_bits\]"),
    (lambda d: d["points"].update({"l9.r": {}}), r"unknown requantization point"),
    (lambda d: d["points"]["l0.r"].update(rounding="stochastic"), "'stochastic' is not a valid Rounding"),
    (lambda d: d.update(h_fmt=[0, 8]), r"h_fmt: Q0.8 needs at least 1 integer bit"),
    (lambda d: d.update(weigth_bits=8), r"unknown key 'weigth_bits'"),
    (lambda d: d["layers"][0].update(w_ih_fmtt=[1, 15]), r"layers\[0\]: unknown key 'w_ih_fmtt'"),
    (lambda d: d["sigmoid"].update(segments=5), r"sigmoid: unknown key 'segments'"),
    (lambda d: d["points"]["l0.r"].update(round="truncate"), r"points.l0.r: unknown key 'round'"),
    (lambda d: d.update(weight_bits=8), r"layers\[0\].w_ih_fmt: Q\d+.\d+ is 16 bits wide, but "
                                        r"weight_bits is 8"),
    (lambda d: d.update(act_bits=12), r"x_fmt: Q4.12 is 16 bits wide, but act_bits is 12"),
    (lambda d: d.update(weight_bits=40), r"weight_bits: must be an integer in 2..24, got 40"),
    (lambda d: d["sigmoid"].update(seg_log2=99), r"sigmoid.seg_log2: must be an integer in 0..12"),
    (lambda d: d["tanh"].update(range_log2=-3), r"tanh.range_log2: must be an integer in 0..6"),
    (lambda d: d["layers"][0].update(b_ih_int_bits=-40), r"layers\[0\].b_ih_int_bits: the bias "
                                                         r"format would be invalid"),
    (lambda d: d.update(calibrated="yes"), r"calibrated: expected true or false"),
    (lambda d: d.update(layers={}), r"layers: expected a list, got an object"),
    (lambda d: d.update(layers=[7]), r"layers\[0\]: expected an object, got a number"),
])
def test_bad_qconfig_messages(tmp_path, rng, mutate, message):
    model = random_model(rng, 2, 3)
    d = choose_spec(model).to_json()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(GruHwError, match=message) as info:
        QuantSpec.load(path)
    assert str(path) in str(info.value)


def test_qconfig_for_another_model(rng):
    spec = choose_spec(random_model(rng, 2, 3, head=2))
    with pytest.raises(GruHwError, match="has a head, the model has none"):
        spec.validate(random_model(rng, 2, 3))
    with pytest.raises(GruHwError, match="reset_after variant, the model is reset_before"):
        spec.validate(random_model(rng, 2, 3, reset_after=False, head=2))


@pytest.mark.parametrize("kw, message", [
    ({"weight_bits": 1}, "weight_bits: must be an integer in 2..24, got 1"),
    ({"act_bits": 40}, "act_bits: must be an integer in 6..24, got 40"),
])
def test_bit_range_errors(rng, kw, message):
    with pytest.raises(GruHwError, match=message):
        choose_spec(random_model(rng, 2, 3), **kw)



def test_datapath_width_is_checked(rng):
    """Formats whose aligned sums would overflow the int64 golden model are refused."""
    from gru_hw.quant import DatapathTooWide, check_datapath, datapath_bits

    model = random_model(rng, 3, 4, head=2)
    qm = quantize_model(model, choose_spec(model, 24, 24))
    widths = datapath_bits(qm)
    assert set(widths) == {"l0.rz_sum", "l0.n_sum", "head_sum"}
    check_datapath(qm)
    big = random_model(rng, 3, 4, head=2, scale=4000.0)  # huge weights at 24/24 bits
    with pytest.raises(DatapathTooWide, match="would need .* bits"):
        quantize_model(big, choose_spec(big, 24, 24))


def test_load_accepts_a_core_spec_json(tmp_path, rng):
    model = random_model(rng, 2, 3)
    spec = choose_spec(model, 8, 9)
    core = {"format": "gru-hw-core", "quant": spec.to_json()}
    (tmp_path / "spec.json").write_text(json.dumps(core))
    assert QuantSpec.load(tmp_path / "spec.json") == spec
    bad = spec.to_json()
    bad["typo"] = 1
    (tmp_path / "spec.json").write_text(json.dumps({"format": "gru-hw-core", "quant": bad}))
    with pytest.raises(GruHwError, match=r"spec.json: quant: unknown key 'typo'"):
        QuantSpec.load(tmp_path / "spec.json")


def test_save_is_atomic(tmp_path, rng):
    spec = choose_spec(random_model(rng, 2, 3))
    spec.save(tmp_path / "q.json")
    spec.save(tmp_path / "q.json")
    assert [p.name for p in tmp_path.iterdir()] == ["q.json"]
    with pytest.raises(GruHwError, match="cannot write"):
        spec.save(tmp_path / "missing" / "q.json")
