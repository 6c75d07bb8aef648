"""Quantization-aware training (gru_hw.qat): the exact mode is the golden integer model bit for bit,
the training mode passes gradients, and the exported files reproduce the exact mode."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model, require
from gru_hw.errors import GruHwError
from gru_hw.fixed import Overflow, QFormat, Rounding
from gru_hw.golden import check_inputs, int_forward, int_forward_q, quantize_inputs
from gru_hw.quant import PointMode, QuantSpec, choose_spec, quantize_model

torch = require("torch")
torch.set_num_threads(1)

from gru_hw.qat import QATGRU, export, held_out_split, run_qat  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "gru_hw" / "data"

#: (weight bits, act bits) the generator accepts, from the narrowest to wide.
WIDTHS = [(2, 6), (2, 8), (4, 8), (8, 8), (16, 6), (8, 16), (16, 16)]
#: (hidden sizes, head outputs)
SHAPES = [([5], 3), ([6, 4], None), ([5, 4], 2)]


def _inputs(rng, n=6, t=8, i=3, scale=2.0):
    x = rng.normal(0, scale, (n, t, i))
    lengths = rng.integers(1, t + 1, n)
    lengths[0] = t
    return x, lengths


def _golden(model, spec, x, lengths):
    x, lengths = check_inputs(model, x, lengths)
    xq, _ = quantize_inputs(spec, x)
    return xq, lengths, int_forward_q(quantize_model(model, spec), xq, lengths, sequence=True)


def _real(v, fmt):
    return np.ldexp(np.asarray(v, dtype=np.float64), -fmt.frac_bits)


def _assert_exact(module, model, spec, x, lengths):
    """forward_int == int_forward_q, forward(exact) == int_forward, forward(qat) values too."""
    xq, lengths, gold = _golden(model, spec, x, lengths)
    y, h = module.forward_int(xq, lengths, sequence=True)
    assert y.dtype == torch.int64 and h.dtype == torch.int64
    np.testing.assert_array_equal(y.numpy(), gold.y)
    np.testing.assert_array_equal(h.numpy(), gold.h)
    y_r, h_r = module(x, lengths, sequence=True, mode="exact")
    ref = int_forward(quantize_model(model, spec), x, lengths, sequence=True)
    np.testing.assert_array_equal(y_r.numpy(), ref.y)
    np.testing.assert_array_equal(h_r.numpy(), ref.h)
    return y_r, h_r


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("shape", range(len(SHAPES)), ids=["1L-head", "2L", "2L-head"])
@pytest.mark.parametrize("widths", WIDTHS, ids=[f"w{w}a{a}" for w, a in WIDTHS])
def test_exact_mode_is_golden_bit_for_bit(reset_after, shape, widths):
    hidden, head = SHAPES[shape]
    wb, ab = widths
    rng = np.random.default_rng(100 * wb + ab + 7 * shape + reset_after)
    model = random_model(rng, 3, hidden, reset_after=reset_after, head=head)
    x, lengths = _inputs(rng)
    spec = choose_spec(model, wb, ab)
    # Formats chosen from the weights, as during training: the same rule as choose_spec.
    module = QATGRU(model, weight_bits=wb, act_bits=ab)
    assert module.spec() == spec
    y, h = _assert_exact(module, model, spec, x, lengths)
    # The straight-through training graph computes the same values (float64 holds them).
    module.train()
    y_q, h_q = module(x, lengths, sequence=True)
    np.testing.assert_array_equal(y_q.detach().numpy(), y.numpy())
    np.testing.assert_array_equal(h_q.detach().numpy(), h.numpy())


def test_exact_mode_with_other_rounding_and_overflow_modes():
    rng = np.random.default_rng(3)
    for reset_after in (True, False):
        model = random_model(rng, 3, [5, 4], reset_after=reset_after, head=2, scale=1.5)
        spec = choose_spec(model, 6, 8)
        # A narrow pre-activation format, so that wrap-around really happens.
        spec = replace(spec, preact_fmt=QFormat(2, 6))
        modes = [PointMode(Rounding.TRUNCATE, Overflow.SATURATE),
                 PointMode(Rounding.HALF_EVEN, Overflow.WRAP),
                 PointMode(Rounding.HALF_EVEN, Overflow.SATURATE),
                 PointMode(Rounding.TRUNCATE, Overflow.WRAP)]
        for i, name in enumerate(spec.point_names()):
            if name != "x":
                spec = spec.with_point(name, modes[i % len(modes)])
        spec = spec.with_point("x", PointMode(Rounding.HALF_EVEN, Overflow.SATURATE))
        x, lengths = _inputs(rng, n=8, t=10, scale=3.0)
        sats = int_forward(quantize_model(model, spec), x, lengths).saturations
        assert sum(v for k, v in sats.items() if k.endswith((".r", ".z", ".n"))) > 0
        module = QATGRU(model, spec=spec)
        y, h = _assert_exact(module, model, spec, x, lengths)
        y_q, h_q = module(x, lengths, sequence=True, mode="qat")
        np.testing.assert_array_equal(y_q.detach().numpy(), y.numpy())
        np.testing.assert_array_equal(h_q.detach().numpy(), h.numpy())


def _example():
    from gru_hw.importers import load_model

    model = load_model(DATA / "japanese_vowels_gru.pt")
    test = np.load(DATA / "japanese_vowels_test.npz")
    train = np.load(DATA / "japanese_vowels_train.npz")
    used = np.arange(train["x"].shape[1])[None, :] < train["lengths"][:, None]
    return model, test["x"], test["lengths"], train["x"][used]


@pytest.mark.parametrize("widths", [(16, 16), (8, 8), (2, 8)], ids=["w16a16", "w8a8", "w2a8"])
def test_exact_mode_on_the_shipped_example(widths):
    model, x, lengths, cal = _example()
    spec = choose_spec(model, *widths, calibration=cal)
    module = QATGRU(model, weight_bits=widths[0], act_bits=widths[1],
                    x_max=float(np.abs(cal).max()))
    assert module.spec() == spec
    _assert_exact(module, model, spec, x, lengths)


def test_random_two_layer_reset_before_model():
    rng = np.random.default_rng(21)
    model = random_model(rng, 5, [8, 6], reset_after=False, head=4)
    x, lengths = _inputs(rng, n=20, t=15, i=5)
    for wb, ab in ((2, 8), (16, 16)):
        spec = choose_spec(model, wb, ab)
        _assert_exact(QATGRU(model, spec=spec), model, spec, x, lengths)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gradients_reach_every_weight(reset_after):
    rng = np.random.default_rng(8)
    model = random_model(rng, 3, [6, 5], reset_after=reset_after, head=3)
    module = QATGRU(model, weight_bits=4, act_bits=8)
    module.train()
    x, lengths = _inputs(rng, n=16, t=6)
    labels = torch.as_tensor(rng.integers(0, 3, 16))
    loss = torch.nn.functional.cross_entropy(module(x, lengths), labels)
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # Without a head, on the hidden state: the gradients still flow.
    model = random_model(rng, 3, [4], reset_after=reset_after)
    module = QATGRU(model, weight_bits=2, act_bits=6)
    module.train()
    module(x, lengths).square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in module.parameters())


def test_a_few_training_steps_lower_the_loss():
    rng = np.random.default_rng(2)
    model = random_model(rng, 3, [6], head=2)
    module = QATGRU(model, weight_bits=3, act_bits=8)
    module.train()
    x, lengths = _inputs(rng, n=32, t=6)
    labels = torch.as_tensor((x[:, 0, 0] > 0).astype(np.int64))
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(module(x, lengths), labels)
        module.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= 0.5 * p.grad
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_export_round_trip_through_gru_hw(tmp_path):
    from gru_hw.cli import main
    from gru_hw.importers import load_model

    rng = np.random.default_rng(4)
    model = random_model(rng, 3, [5, 4], reset_after=False, head=3)
    module = QATGRU(model, weight_bits=3, act_bits=8, x_max=4.0)
    with torch.no_grad():  # trained weights: not on any grid, some larger than before
        for p in module.parameters():
            p.mul_(1.3).add_(0.01)
    x, lengths = _inputs(rng, n=10, t=7)
    paths = export(module, tmp_path / "out", check_x=x, check_lengths=lengths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.npz", "qconfig.json"]
    back, spec = load_model(paths["model"]), QuantSpec.load(paths["qconfig"])
    assert spec == module.spec()
    xq, lengths_, gold = _golden(back, spec, x, lengths)
    y, h = module.forward_int(xq, lengths_, sequence=True)
    np.testing.assert_array_equal(gold.y, y.numpy())
    np.testing.assert_array_equal(gold.h, h.numpy())
    # And through the command line's --qconfig, as a user runs it.
    np.savez(tmp_path / "in.npz", x=x, lengths=lengths)
    assert main(["golden", paths["model"], str(tmp_path / "in.npz"), "-o",
                 str(tmp_path / "g.npz"), "--sequence", "--qconfig", paths["qconfig"]]) == 0
    g = np.load(tmp_path / "g.npz")
    y_r, h_r = module(x, lengths, sequence=True, mode="exact")
    np.testing.assert_array_equal(g["y"], y_r.numpy())
    np.testing.assert_array_equal(g["h"], h_r.numpy())


def _task_files(tmp_path, rng, model, n=40, t=5, regression=False):
    x = rng.normal(0, 1, (n, t, model.input_size)).astype(np.float32)
    lengths = rng.integers(2, t + 1, n)
    if regression:
        np.savez(tmp_path / "train.npz", x=x, lengths=lengths,
                 targets=rng.normal(0, 0.3, (n, model.output_size)))
    else:
        np.savez(tmp_path / "train.npz", x=x, lengths=lengths,
                 labels=(x[:, 0, 0] > 0).astype(np.int64))
    return tmp_path / "train.npz"


@pytest.mark.parametrize("regression", [False, True], ids=["classifier", "regression"])
def test_run_qat_end_to_end(tmp_path, regression):
    """A classifier validated on a held-out split; a regression with a validation file."""
    from gru_hw.importers import load_model

    rng = np.random.default_rng(6)
    model = random_model(rng, 3, [5], reset_after=not regression, head=2)
    model.save_npz(tmp_path / "m.npz")
    train = _task_files(tmp_path, rng, model, regression=regression)
    val = None
    if regression:
        val = tmp_path / "val.npz"
        np.savez(val, x=rng.normal(0, 1, (12, 4, 3)), targets=rng.normal(0, 0.3, (12, 2)))
    calls = []
    s = run_qat(tmp_path / "m.npz", train, tmp_path / "out", weight_bits=3, act_bits=8,
                epochs=2, val_path=val, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    assert s["task"] == ("regression" if regression else "classification")
    assert s["metric"] == ("mse" if regression else "accuracy")
    assert [h["epoch"] for h in s["history"]] == [0, 1, 2]
    assert s["history"][0]["val_qat"] == s["ptq"]  # epoch 0 is post-training quantization
    assert s["qat"] == s["history"][s["best_epoch"]]["val_qat"]
    assert (s["n_train"], s["n_val"]) == ((40, 12) if regression else (32, 8))
    on_disk = json.loads((tmp_path / "out" / "qat.json").read_text())
    assert on_disk["qat"] == s["qat"] and on_disk["history"] == s["history"]
    # The exported files give the reported validation metric through gru-hw's own golden model.
    back = load_model(s["files"]["model"])
    spec = QuantSpec.load(s["files"]["qconfig"])
    assert spec.weight_bits == 3 and spec.act_bits == 8 and spec.calibrated
    if regression:
        d = np.load(val)
        y = int_forward(quantize_model(back, spec), d["x"]).y
        assert np.mean((y - d["targets"]) ** 2) == pytest.approx(s["qat"], rel=1e-12)
    else:
        d = np.load(train)
        _, val_idx = held_out_split(40, d["labels"], 0.2, 0)
        y = int_forward(quantize_model(back, spec), d["x"][val_idx], d["lengths"][val_idx]).y
        assert np.mean(y.argmax(1) == d["labels"][val_idx]) == s["qat"]


def test_bad_inputs_name_the_file(tmp_path):
    rng = np.random.default_rng(9)
    model = random_model(rng, 3, [4], head=3)
    m = tmp_path / "m.npz"
    model.save_npz(m)
    x = rng.normal(0, 1, (20, 4, 3))
    out = tmp_path / "out"

    def fails(match, model_path=m, train=None, val=None, **kw):
        args = dict(weight_bits=4, act_bits=8, epochs=1)
        args.update(kw)
        with pytest.raises(GruHwError, match=match):
            run_qat(model_path, train, out, val_path=val, **args)
        assert not out.exists()

    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    good = npz("good.npz", x=x, labels=rng.integers(0, 3, 20))
    fails(r"missing\.npz: no such file", model_path=tmp_path / "missing.npz", train=good)
    fails(r"nolabels\.npz: has no 'labels' \(N,\) or 'targets'", train=npz("nolabels.npz", x=x))
    fails(r"both\.npz: has both", train=npz("both.npz", x=x, labels=np.zeros(20, int),
                                             targets=np.zeros((20, 3))))
    fails(r"range\.npz: labels must be class indices in 0\.\.2 .* got 0\.\.5",
          train=npz("range.npz", x=x, labels=np.arange(20) % 6))
    fails(r"flt\.npz: labels must be 20 integers", train=npz("flt.npz", x=x, labels=np.zeros(20)))
    fails(r"tgt\.npz: targets must be real numbers of shape \(20, 3\)",
          train=npz("tgt.npz", x=x, targets=np.zeros((20, 2))))
    fails(r"nan\.npz: targets contain NaN",
          train=npz("nan.npz", x=x, targets=np.full((20, 3), np.nan)))
    fails(r"feat\.npz: x has 2 features per step, the model takes 3",
          train=npz("feat.npz", x=x[:, :, :2], labels=np.zeros(20, int)))
    xn = x.copy()
    xn[0, 0, 0] = np.inf
    fails(r"inf\.npz: x contains 1 NaN or infinite", train=npz("inf.npz", x=xn,
                                                               labels=np.zeros(20, int)))
    fails(r"one\.npz: 1 sequence\(s\) are too few", train=npz("one.npz", x=x[:1],
                                                             labels=np.zeros(1, int)))
    fails(r"val\.npz: has targets, but .*good\.npz has labels", train=good,
          val=npz("val.npz", x=x, targets=np.zeros((20, 3))))
    fails(r"weight_bits: must be an integer in 2\.\.24, got 1", train=good, weight_bits=1)
    fails(r"act_bits: must be an integer in 6\.\.24, got 40", train=good, act_bits=40)
    fails(r"epochs: must be an integer >= 1, got 0", train=good, epochs=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(GruHwError, match=r"file: exists and is not a directory"):
        run_qat(m, good, tmp_path / "file", weight_bits=4, act_bits=8, epochs=1)


def test_module_argument_errors():
    model = random_model(np.random.default_rng(1), 3, [4])
    with pytest.raises(GruHwError, match="give either a spec or both weight_bits and act_bits"):
        QATGRU(model, weight_bits=4)
    with pytest.raises(GruHwError, match="a spec fixes every format"):
        QATGRU(model, spec=choose_spec(model, 4, 8), weight_bits=4)
    with pytest.raises(GruHwError, match="is for the reset_before variant"):
        QATGRU(model, spec=choose_spec(random_model(np.random.default_rng(1), 3, [4],
                                                    reset_after=False), 4, 8))
    module = QATGRU(model, weight_bits=4, act_bits=8)
    with pytest.raises(GruHwError, match=r"x must be \(N, T, 3\), got \(2, 5, 4\)"):
        module(np.zeros((2, 5, 4)))
    with pytest.raises(GruHwError, match="mode must be one of exact, qat, float"):
        module(np.zeros((2, 5, 3)), mode="int")
    x = np.zeros((2, 5, 3))
    x[1, 4, 0] = np.nan
    with pytest.raises(GruHwError, match="x contains NaN or infinite values"):
        module(x)
    module(x, [5, 4])  # past a sequence's length, anything goes
    with pytest.raises(GruHwError, match=r"lengths must be 2 integers in 1\.\.5"):
        module(x, [5, 6])


def test_importing_gru_hw_qat_does_not_import_torch():
    code = ("import sys, gru_hw, gru_hw.qat, gru_hw.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_qat_command_line(tmp_path, capsys):
    """`gru-hw qat` trains, writes model.npz + qconfig.json, and `golden --qconfig` reproduces
    the exported module's exact outputs; bad flags exit 2 naming the flag."""
    from gru_hw import cli

    rng = np.random.default_rng(9)
    model = random_model(rng, 3, [4], head=2)
    model.save_npz(tmp_path / "m.npz")
    train = _task_files(tmp_path, rng, model)
    out = tmp_path / "q"
    assert cli.main(["qat", str(tmp_path / "m.npz"), str(train), "-o", str(out),
                     "--weight-bits", "3", "--act-bits", "8", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "validation accuracy" in text and "qconfig.json" in text
    assert cli.main(["golden", str(out / "model.npz"), str(train), "-o", str(tmp_path / "g.npz"),
                     "--qconfig", str(out / "qconfig.json")]) == 0
    from gru_hw.importers import load_model

    back, spec = load_model(out / "model.npz"), QuantSpec.load(out / "qconfig.json")
    d = np.load(train)
    module = QATGRU(back, spec=spec).eval()
    y_mod = module(d["x"], d["lengths"], mode="exact").numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "g.npz")["y"], y_mod)
    with pytest.raises(SystemExit) as exc:
        cli.main(["qat", str(tmp_path / "m.npz"), str(train), "-o", str(out),
                  "--weight-bits", "1"])
    assert exc.value.code == 2
    assert "--weight-bits" in capsys.readouterr().err
