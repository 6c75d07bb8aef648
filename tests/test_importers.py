"""Importers, each checked against the framework's own forward pass (never against our code).

Framework packages are optional: ``require`` skips a test when one is missing, except under CI
(``CI`` set), where a missing package is a failure.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

os.environ["KERAS_BACKEND"] = "torch"  # before any import of keras (tests only, never the package)

import numpy as np
import pytest
from conftest import require

from gru_hw import GruHwError, GRUModel
from gru_hw.golden import float_forward
from gru_hw.importers import load_model
from gru_hw.model import GRULayer, from_textbook

TOL = 1e-5

# Keras's torch backend trips a NumPy 2 deprecation inside predict(); not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max absolute difference, after checking the shapes agree."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def raises_user_error(path: Path, *fragments: str) -> str:
    """Load ``path``, expect a GruHwError naming the file and containing every fragment."""
    with pytest.raises(GruHwError) as info:
        load_model(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert "\n" not in msg.strip(), msg
    return msg


# ---- PyTorch ------------------------------------------------------------------------------------


def _torch_net(torch: ModuleType, layers: int, batch_first: bool, head: bool, seed: int = 0):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(4, 6, num_layers=layers, batch_first=batch_first)
            self.fc = torch.nn.Linear(6, 3) if head else None

    torch.manual_seed(seed)
    net = Net().double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.8, 0.8)
    return net


def _torch_run(torch: ModuleType, net, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Framework output for batch-major ``x`` (N, T, I): (y, top-layer sequence (N, T, H))."""
    xt = torch.from_numpy(x)
    if not net.rnn.batch_first:
        xt = xt.transpose(0, 1)
    with torch.no_grad():
        seq, h_n = net.rnn(xt)
        if not net.rnn.batch_first:
            seq = seq.transpose(0, 1)
        y = net.fc(h_n[-1]) if net.fc is not None else h_n[-1]
    return y.numpy(), seq.numpy()


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("head", [True, False])
def test_torch_matches_framework(tmp_path: Path, layers: int, batch_first: bool, head: bool):
    torch = require("torch")
    net = _torch_net(torch, layers, batch_first, head, seed=layers)
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    assert model.num_layers == layers and model.reset_after
    assert (model.head is not None) == head
    x = np.random.default_rng(layers).uniform(-2, 2, size=(5, 9, 4))
    y_ref, seq_ref = _torch_run(torch, net, x)
    got = float_forward(model, x, sequence=True)
    assert max_diff(got.y, y_ref) <= TOL
    assert max_diff(got.h, seq_ref) <= TOL


@pytest.mark.parametrize("head", [True, False])
def test_torch_variable_lengths(tmp_path: Path, head: bool):
    torch = require("torch")
    net = _torch_net(torch, 2, True, head, seed=7)
    path = tmp_path / "model.pth"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    x = np.random.default_rng(3).uniform(-2, 2, size=(4, 8, 4))
    lengths = np.array([8, 1, 5, 3])
    got = float_forward(model, x, lengths, sequence=True)
    for n, length in enumerate(lengths):
        y_ref, seq_ref = _torch_run(torch, net, x[n : n + 1, :length])
        assert max_diff(got.y[n : n + 1], y_ref) <= TOL
        assert max_diff(got.h[n : n + 1, :length], seq_ref) <= TOL
        assert np.all(got.h[n, length:] == 0.0)


def test_torch_bare_gru_nested_names_no_bias_and_checkpoint(tmp_path: Path):
    torch = require("torch")
    torch.manual_seed(1)
    gru = torch.nn.GRU(3, 5, num_layers=2, bias=False).double()
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 6, 3))
    with torch.no_grad():
        seq, h_n = gru(torch.from_numpy(x).transpose(0, 1))
    # A bare nn.GRU state_dict (no prefix), bias=False.
    bare = tmp_path / "bare.pt"
    torch.save(gru.state_dict(), bare)
    got = float_forward(load_model(bare), x, sequence=True)
    assert max_diff(got.y, h_n[-1].numpy()) <= TOL
    assert max_diff(got.h, seq.transpose(0, 1).numpy()) <= TOL

    # Deeply nested attribute names, wrapped in a training checkpoint.
    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.core = gru

    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Inner()
            self.classifier = torch.nn.Linear(5, 2).double()

    outer = Outer()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state_dict": outer.state_dict(), "lr": 0.1}, ckpt)
    model = load_model(ckpt)
    with torch.no_grad():
        y_ref = outer.classifier(h_n[-1]).numpy()
    assert max_diff(float_forward(model, x).y, y_ref) <= TOL


def test_torch_user_errors(tmp_path: Path):
    torch = require("torch")

    def save(obj, name: str) -> Path:
        path = tmp_path / name
        torch.save(obj, path)
        return path

    bi = torch.nn.GRU(3, 4, bidirectional=True)
    raises_user_error(save(bi.state_dict(), "bi.pt"), "bidirectional", "weight_ih_l0_reverse")
    proj = torch.nn.LSTM(3, 4, proj_size=2)  # nn.GRU has no proj_size; same key scheme
    raises_user_error(save(proj.state_dict(), "proj.pt"), "weight_hr_l0")
    lstm = torch.nn.LSTM(3, 4)
    raises_user_error(save(lstm.state_dict(), "lstm.pt"), "LSTM", "weight_hh_l0")
    whole = torch.nn.Sequential(torch.nn.GRU(3, 4))
    raises_user_error(save(whole, "whole.pt"), "save model.state_dict() instead")
    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.GRU(3, 4)), scripted)
    raises_user_error(scripted, "TorchScript", "save model.state_dict() instead")
    two = torch.nn.ModuleDict({"a": torch.nn.GRU(3, 4), "b": torch.nn.GRU(4, 4)})
    raises_user_error(save(two.state_dict(), "two.pt"), "more than one nn.GRU", "'a'", "'b'")
    heads = torch.nn.ModuleDict(
        {"rnn": torch.nn.GRU(3, 4), "fc1": torch.nn.Linear(4, 4), "fc2": torch.nn.Linear(4, 2)}
    )
    raises_user_error(save(heads.state_dict(), "heads.pt"), "'fc1'", "'fc2'", "one nn.Linear")
    wrong = torch.nn.ModuleDict({"rnn": torch.nn.GRU(3, 4), "fc": torch.nn.Linear(5, 2)})
    raises_user_error(save(wrong.state_dict(), "wrong.pt"), "fc.weight", "hidden")
    norm = torch.nn.ModuleDict({"rnn": torch.nn.GRU(3, 4), "bn": torch.nn.BatchNorm1d(4)})
    raises_user_error(save(norm.state_dict(), "bn.pt"), "bn.running_mean")
    raises_user_error(save({"w": torch.zeros(3)}, "nogru.pt"), "no nn.GRU weights")
    raises_user_error(save([1, 2], "list.pt"), "not a state_dict")
    nan = torch.nn.GRU(3, 4).state_dict()
    nan["weight_hh_l0"][0, 0] = float("nan")
    raises_user_error(save(nan, "nan.pt"), "NaN")


def test_torch_blocked_globals_say_what_is_wrong(tmp_path, recwarn):
    """Pickles whose globals weights_only refuses: named, and torch's warnings do not leak."""
    import fractions
    import pickle

    torch = require("torch")
    sd = torch.nn.GRU(3, 4).state_dict()
    plain = tmp_path / "plain.pt"  # pickle.dump, protocol 4: torch's safe loader cannot parse it
    with open(plain, "wb") as f:
        pickle.dump({**{k: v.numpy() for k, v in sd.items()}, "f": fractions.Fraction(1, 3)}, f)
    msg = raises_user_error(plain, "plain Python pickle (protocol 4", "pickle.dump",
                            "save model.state_dict() instead")
    assert "not a PyTorch file" not in msg
    legacy = tmp_path / "legacy.pt"  # torch.save, old format, a blocked global inside
    torch.save({**sd, "f": fractions.Fraction(1, 3)}, legacy, _use_new_zipfile_serialization=False)
    raises_user_error(legacy, "fractions.Fraction", "weights_only")
    zipped = tmp_path / "zipped.pt"
    torch.save({**sd, "f": fractions.Fraction(1, 3)}, zipped)
    raises_user_error(zipped, "fractions.Fraction", "weights_only")
    assert not [w for w in recwarn if "torch" in str(w.filename)], [str(w) for w in recwarn]


# ---- ONNX -------------------------------------------------------------------------------------


def _ort_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


_CLASSIFIER = """
import torch


class Classifier(torch.nn.Module):
    def __init__(self, layers, batch_first, from_h_n):
        super().__init__()
        self.gru = torch.nn.GRU(4, 6, num_layers=layers, batch_first=batch_first)
        self.head = torch.nn.Linear(6, 3)
        self.batch_first, self.from_h_n = batch_first, from_h_n

    def forward(self, x):
        seq, h_n = self.gru(x)
        if self.from_h_n:
            return self.head(h_n[-1])
        return self.head(seq[:, -1] if self.batch_first else seq[-1])
"""

_DYNAMO_DYNAMIC_EXPORT = _CLASSIFIER + """
import sys, warnings
warnings.simplefilter("ignore")
layers, batch_first, from_h_n, state, example, out = sys.argv[1:]
net = Classifier(int(layers), batch_first == "1", from_h_n == "1")
net.load_state_dict(torch.load(state, weights_only=True))
dims = {0: torch.export.Dim("d0"), 1: torch.export.Dim("d1")}
x = torch.load(example, weights_only=True)
torch.onnx.export(net.eval(), (x,), out, dynamo=True, dynamic_shapes=(dims,))
"""


@pytest.mark.parametrize(
    "dynamo, dynamic, batch_first, layers, from_h_n",
    [
        (False, True, True, 2, False),  # legacy TorchScript exporter, classifier on y[:, -1]
        (False, True, False, 1, True),  # legacy, sequence-first, head on h_n[-1]
        (False, True, True, 3, True),  # legacy, h_n of three layers: Concat + Gather
        (False, False, True, 2, True),  # legacy, static shapes
        (True, False, True, 2, False),  # dynamo exporter (the default in torch >= 2.9), static
        # dynamo with dynamic batch and time: Shape -> Slice -> Mul -> Reshape chains (~25 s)
        pytest.param(True, True, False, 2, True, marks=pytest.mark.slow),
    ],
)
def test_onnx_torch_export(
    tmp_path: Path, dynamo: bool, dynamic: bool, batch_first: bool, layers: int, from_h_n: bool
):
    torch = require("torch")
    require("onnx")
    if dynamo:
        require("onnxscript")
    scope: dict = {}
    exec(_CLASSIFIER, scope)
    torch.manual_seed(layers)
    net = scope["Classifier"](layers, batch_first, from_h_n).eval()
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 7, 4)).astype(np.float32)
    x_model = x if batch_first else x.transpose(1, 0, 2).copy()
    path = tmp_path / "classifier.onnx"
    example = (torch.from_numpy(x_model),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo and dynamic:
            # In torch 2.13 a second dynamo export with dynamic_shapes in one process pins the
            # time axis to the example's size; a fresh interpreter gives the real thing.
            import subprocess

            torch.save(net.state_dict(), tmp_path / "state.pt")
            torch.save(example[0], tmp_path / "example.pt")
            args = [str(layers), str(int(batch_first)), str(int(from_h_n)),
                    str(tmp_path / "state.pt"), str(tmp_path / "example.pt"), str(path)]
            subprocess.run([sys.executable, "-c", _DYNAMO_DYNAMIC_EXPORT, *args], check=True,
                           capture_output=True)
        elif dynamo:
            torch.onnx.export(net, example, str(path), dynamo=True)
        else:
            axes = {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}
            kw = {"dynamic_axes": {"x": axes}} if dynamic else {}
            torch.onnx.export(net, example, str(path), dynamo=False, input_names=["x"],
                              output_names=["y"], **kw)
    model = load_model(path)
    assert model.num_layers == layers and model.reset_after and model.output_size == 3
    (y_ref,) = _ort_run(path, x_model)
    assert max_diff(float_forward(model, x).y, y_ref) <= TOL
    if dynamic:  # a different batch and length must agree too
        x2 = np.random.default_rng(2).uniform(-1, 1, size=(2, 11, 4)).astype(np.float32)
        (y2,) = _ort_run(path, x2 if batch_first else x2.transpose(1, 0, 2).copy())
        assert max_diff(float_forward(model, x2).y, y2) <= TOL


def _gru_weights(rng, hidden: int, inputs: int, scale: float = 0.6):
    w = rng.uniform(-scale, scale, size=(1, 3 * hidden, inputs)).astype(np.float32)
    r = rng.uniform(-scale, scale, size=(1, 3 * hidden, hidden)).astype(np.float32)
    b = rng.uniform(-scale, scale, size=(1, 6 * hidden)).astype(np.float32)
    return w, r, b


def _hand_graph(
    lbr: int,
    head: str = "gemm",
    gru_attrs: dict | None = None,
    extra_inputs: dict | None = None,
    layout: int = 0,
    seed: int = 0,
):
    """Two stacked GRU nodes (I=3 -> H=5 -> H=4) and a head, built with onnx.helper."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w0, r0, b0 = _gru_weights(rng, 5, 3)
    w1, r1, b1 = _gru_weights(rng, 4, 5)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w0, "W0"), (r0, "R0"), (b0, "B0"), (w1, "W1"), (r1, "R1"), (b1, "B1")]]
    attrs = {"hidden_size": 5, "linear_before_reset": lbr, "layout": layout}
    attrs.update(gru_attrs or {})
    first_inputs = ["x", "W0", "R0", "B0"]
    for slot, name in sorted((extra_inputs or {}).items()):
        first_inputs += [""] * (slot - len(first_inputs)) + [name]
    d_axis = 1 if layout == 0 else 2
    nodes = [
        helper.make_node("GRU", first_inputs, ["y0", ""], name="gru0", **attrs),
        helper.make_node("Squeeze", ["y0", "ax_d"], ["s0"], name="squeeze0"),
        helper.make_node("GRU", ["s0", "W1", "R1", "B1"], ["", "yh1"], name="gru1",
                         hidden_size=4, linear_before_reset=lbr, layout=layout),
    ]
    inits.append(numpy_helper.from_array(np.array([d_axis], dtype=np.int64), "ax_d"))
    l_axis = 0 if layout == 0 else 1
    inits.append(numpy_helper.from_array(np.array([l_axis], dtype=np.int64), "ax_l"))
    nodes.append(helper.make_node("Squeeze", ["yh1", "ax_l"], ["last"], name="squeeze1"))
    hw = rng.uniform(-1, 1, size=(2, 4)).astype(np.float32)
    hb = rng.uniform(-1, 1, size=(2,)).astype(np.float32)
    if head == "gemm":  # transB=0, alpha and beta not 1
        inits += [numpy_helper.from_array(hw.T.copy(), "HW"), numpy_helper.from_array(hb, "HB")]
        nodes.append(helper.make_node("Gemm", ["last", "HW", "HB"], ["y"], name="head",
                                      alpha=0.5, beta=2.0))
    else:  # MatMul + Add
        inits += [numpy_helper.from_array(hw.T.copy(), "HW"), numpy_helper.from_array(hb, "HB")]
        nodes.append(helper.make_node("MatMul", ["last", "HW"], ["mm"], name="head_mm"))
        nodes.append(helper.make_node("Add", ["HB", "mm"], ["y"], name="head_add"))
    x_shape = ["time", "batch", 3] if layout == 0 else ["batch", "time", 3]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    for name in (extra_inputs or {}).values():
        if not any(i.name == name for i in inits):
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "stacked_gru", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return onnx, helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    ), inits


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("head", ["gemm", "matmul_add"])
def test_onnx_hand_built_stacked(tmp_path: Path, lbr: int, head: str):
    onnx, model_proto, _ = _hand_graph(lbr, head, seed=lbr)
    path = tmp_path / "stacked.onnx"
    onnx.save(model_proto, str(path))
    model = load_model(path)
    assert model.reset_after == bool(lbr) and model.num_layers == 2
    assert [l.hidden_size for l in model.layers] == [5, 4] and model.output_size == 2
    x = np.random.default_rng(5).uniform(-1.5, 1.5, size=(4, 10, 3)).astype(np.float32)
    (y_ref,) = _ort_run(path, x.transpose(1, 0, 2).copy())
    assert max_diff(float_forward(model, x).y, y_ref) <= TOL


@pytest.mark.parametrize("lbr", [0, 1])
def test_onnx_layout_1_against_onnx_reference(tmp_path: Path, lbr: int):
    """layout=1 (batch-major): onnxruntime refuses it, so compare with onnx.reference."""
    onnx, model_proto, _ = _hand_graph(lbr, "gemm", layout=1, seed=9)
    path = tmp_path / "layout1.onnx"
    onnx.save(model_proto, str(path))
    model = load_model(path)
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(6).uniform(-1.5, 1.5, size=(3, 6, 3)).astype(np.float32)
    (y_ref,) = ReferenceEvaluator(model_proto).run(None, {"x": x})
    assert max_diff(float_forward(model, x).y, y_ref) <= TOL


def test_onnx_user_errors(tmp_path: Path):
    def save(name: str, **kw) -> Path:
        onnx, proto, _ = _hand_graph(1, **kw)
        path = tmp_path / name
        onnx.save(proto, str(path))
        return path

    raises_user_error(save("bi.onnx", gru_attrs={"direction": "bidirectional"}),
                      "gru0", "direction='bidirectional'")
    raises_user_error(save("rev.onnx", gru_attrs={"direction": "reverse"}), "direction='reverse'")
    raises_user_error(save("clip.onnx", gru_attrs={"clip": 3.0}), "gru0", "clip=3.0")
    raises_user_error(save("act.onnx", gru_attrs={"activations": ["HardSigmoid", "Tanh"]}),
                      "activations=['HardSigmoid', 'Tanh']")
    raises_user_error(save("hs.onnx", gru_attrs={"hidden_size": 7}), "hidden_size=7")
    raises_user_error(save("h0.onnx", extra_inputs={5: "h0"}), "initial_h", "'h0'")
    raises_user_error(save("lens.onnx", extra_inputs={4: "lens"}), "sequence_lens")
    raises_user_error(save("mixed.onnx", gru_attrs={"linear_before_reset": 0}),
                      "gru1", "linear_before_reset")

    onnx = require("onnx")
    from onnx import numpy_helper

    _, proto, _ = _hand_graph(1)
    w0 = [i for i in proto.graph.initializer if i.name == "W0"][0]
    proto.graph.initializer.remove(w0)
    proto.graph.input.append(onnx.helper.make_tensor_value_info("W0", 1, [1, 15, 3]))
    path = tmp_path / "wdyn.onnx"
    onnx.save(proto, str(path))
    raises_user_error(path, "W", "static initializer")

    _, proto, _ = _hand_graph(1)
    proto.graph.initializer.append(
        numpy_helper.from_array(np.full((1, 1, 5), 0.5, dtype=np.float32), "h0")
    )
    proto.graph.node[0].input.extend(["", "h0"])
    path = tmp_path / "h0const.onnx"
    onnx.save(proto, str(path))
    raises_user_error(path, "non-zero initial_h")


def test_onnx_last_step_selection_is_checked(tmp_path: Path):
    """Gathering a time step other than the last one must be refused, not silently imported."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w, r, b = _gru_weights(np.random.default_rng(0), 4, 2)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w, "W"), (r, "R"), (b, "B")]]
    inits.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "first"))
    nodes = [
        helper.make_node("GRU", ["x", "W", "R", "B"], ["y", ""], hidden_size=4, name="g"),
        helper.make_node("Gather", ["y", "first"], ["out"], axis=0, name="pick"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits,
    )
    path = tmp_path / "first.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    raises_user_error(path, "pick", "time step", "last step")


# ---- Keras -----------------------------------------------------------------------------------


def _keras():
    keras = require("keras")
    keras.utils.set_random_seed(0)
    return keras


def _keras_model(keras, layers: int, reset_after: bool, seed: int):
    init = keras.initializers.RandomUniform(-0.7, 0.7, seed=seed)
    model = keras.Sequential([keras.Input((None, 3))])
    for k in range(layers):
        model.add(keras.layers.GRU(
            5 if k == 0 else 4, return_sequences=k < layers - 1, reset_after=reset_after,
            kernel_initializer=init, recurrent_initializer=init, bias_initializer=init,
        ))
    model.add(keras.layers.Dense(2, kernel_initializer=init, bias_initializer=init))
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset_after", [True, False])
def test_keras_matches_framework(tmp_path: Path, suffix: str, layers: int, reset_after: bool):
    require("h5py")
    keras = _keras()
    net = _keras_model(keras, layers, reset_after, seed=layers + 10 * reset_after)
    path = tmp_path / f"model{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.save(path)
    model = load_model(path)
    assert model.reset_after == reset_after and model.num_layers == layers
    x = np.random.default_rng(4).uniform(-1.5, 1.5, size=(6, 8, 3)).astype(np.float32)
    y_ref = np.asarray(net.predict(x, verbose=0))
    assert max_diff(float_forward(model, x).y, y_ref) <= TOL


def test_keras_functional_masking_names_and_no_bias(tmp_path: Path):
    require("h5py")
    keras = _keras()
    init = keras.initializers.RandomUniform(-0.7, 0.7, seed=3)
    inp = keras.Input((None, 2), name="signal")
    h = keras.layers.Masking(0.0)(inp)
    h = keras.layers.GRU(4, return_sequences=True, use_bias=False, name="encoder",
                         kernel_initializer=init, recurrent_initializer=init)(h)
    h = keras.layers.Dropout(0.3)(h)
    h = keras.layers.GRU(3, name="summary", kernel_initializer=init,
                         recurrent_initializer=init, bias_initializer=init, unroll=True)(h)
    out = keras.layers.Dense(2, name="logits", kernel_initializer=init,
                             bias_initializer=init)(h)
    net = keras.Model(inp, out)
    x = np.random.default_rng(8).uniform(-1, 1, size=(3, 5, 2)).astype(np.float32)
    y_ref = np.asarray(net.predict(x, verbose=0))
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"functional{suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.save(path)
        model = load_model(path)
        assert np.all(model.layers[0].b_ih == 0) and np.all(model.layers[0].b_hh == 0)
        assert max_diff(float_forward(model, x).y, y_ref) <= TOL


def test_keras_user_errors(tmp_path: Path):
    require("h5py")
    keras = _keras()

    def save(layers: list, name: str) -> Path:
        net = keras.Sequential([keras.Input((None, 3))] + layers)
        path = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.save(path)
        return path

    gl = keras.layers
    path = save([gl.GRU(4, go_backwards=True, name="backwards")], "back.keras")
    raises_user_error(path, "'backwards'", "go_backwards=True")
    path = save([gl.GRU(4), gl.Dense(2, activation="relu", name="fc")], "relu.h5")
    raises_user_error(path, "'fc'", "activation='relu'")
    path = save([gl.GRU(4, recurrent_activation="hard_sigmoid", name="g")], "hard.keras")
    raises_user_error(path, "recurrent_activation='hard_sigmoid'")
    path = save([gl.GRU(4, return_sequences=True), gl.Dense(2, name="td")], "seq.keras")
    raises_user_error(path, "'td'", "every time step")
    path = save([gl.GRU(4), gl.Dense(3), gl.Dense(2)], "two.keras")
    raises_user_error(path, "more than one Dense")
    path = save([gl.LSTM(4, name="lstm_layer")], "lstm.keras")
    raises_user_error(path, "'lstm_layer'", "LSTM")
    path = save([gl.Bidirectional(gl.GRU(4), name="bi")], "bi.keras")
    raises_user_error(path, "'bi'", "Bidirectional")
    path = save([gl.GRU(4, return_sequences=True, name="a"), gl.GRU(3, reset_after=False)],
                "mixed.h5")
    raises_user_error(path, "reset_after")
    net = keras.Sequential([keras.Input((None, 3)), gl.GRU(4)])
    path = tmp_path / "only.weights.h5"
    net.save_weights(path)
    raises_user_error(path, "model_config", "model.save")


# ---- native .npz and the textbook form ---------------------------------------------------------


def _random_model(rng, reset_after: bool, head: bool, sizes=(3, 5, 4)) -> GRUModel:
    layers = []
    for i, h in zip(sizes[:-1], sizes[1:]):
        layers.append(GRULayer(rng.normal(size=(3 * h, i)), rng.normal(size=(3 * h, h)),
                               rng.normal(size=3 * h), rng.normal(size=3 * h)))
    dense = None
    if head:
        from gru_hw.model import DenseHead

        dense = DenseHead(rng.normal(size=(2, sizes[-1])), rng.normal(size=2))
    return GRUModel(tuple(layers), reset_after=reset_after, head=dense)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("head", [True, False])
def test_npz_round_trip(tmp_path: Path, reset_after: bool, head: bool):
    rng = np.random.default_rng(int(reset_after) + 2 * int(head))
    model = _random_model(rng, reset_after, head)
    path = tmp_path / "model.npz"
    model.save_npz(path)
    back = load_model(path)
    assert back.reset_after == reset_after and (back.head is not None) == head
    for a, b in zip(model.layers, back.layers):
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
    x = rng.normal(size=(2, 4, 3))
    assert np.array_equal(float_forward(model, x).y, float_forward(back, x).y)


def test_npz_default_reset_after(tmp_path: Path):
    arrays = _random_model(np.random.default_rng(0), True, False).to_npz_dict()
    del arrays["reset_after"]
    path = tmp_path / "noflag.npz"
    np.savez(path, **arrays)
    assert load_model(path).reset_after is True


def test_npz_user_errors(tmp_path: Path):
    good = _random_model(np.random.default_rng(0), False, True).to_npz_dict()

    def save(name: str, **changes) -> Path:
        arrays = dict(good)
        for key, value in changes.items():
            if value is None:
                del arrays[key]
            else:
                arrays[key] = value
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    raises_user_error(save("miss.npz", b_hh_1=None), "missing key 'b_hh_1'")
    raises_user_error(save("shape.npz", w_hh_0=np.zeros((15, 4))), "'w_hh_0'", "(15, 4)")
    raises_user_error(save("chain.npz", w_ih_1=np.zeros((12, 3))), "'w_ih_1'", "(12, 3)")
    nan = good["w_ih_0"].copy()
    nan[1, 1] = np.nan
    raises_user_error(save("nan.npz", w_ih_0=nan), "'w_ih_0'", "NaN")
    raises_user_error(save("head.npz", head_w=np.zeros((2, 5))), "'head_w'", "(2, 5)")
    raises_user_error(save("headb.npz", head_b=None), "'head_b'", "missing")
    raises_user_error(save("flag.npz", reset_after=np.array([1.5])), "'reset_after'")
    raises_user_error(save("typo.npz", head_weight=np.zeros(2)), "'head_weight'")
    raises_user_error(save("none.npz", **{k: None for k in good if k != "reset_after"}),
                      "missing key 'w_ih_0'")


def _textbook_forward(params: list, x: np.ndarray, reset_after: bool) -> np.ndarray:
    """A direct implementation of the textbook cell h' = (1 - z) h + z n (gate order r, z, n)."""

    def sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    n_seq, steps, _ = x.shape
    hs = [np.zeros((n_seq, p[1].shape[1])) for p in params]
    for t in range(steps):
        inp = x[:, t]
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
            h = hs[k]
            hsz = h.shape[1]
            wr, wz, wn = np.split(w_ih, 3)
            ur, uz, un = np.split(w_hh, 3)
            br, bz, bn = np.split(b_ih, 3)
            cr, cz, cn = np.split(b_hh, 3)
            r = sigmoid(inp @ wr.T + br + h @ ur.T + cr)
            z = sigmoid(inp @ wz.T + bz + h @ uz.T + cz)
            if reset_after:
                n = np.tanh(inp @ wn.T + bn + r * (h @ un.T + cn))
            else:
                n = np.tanh(inp @ wn.T + bn + (r * h) @ un.T + cn)
            assert hsz == n.shape[1]
            hs[k] = (1.0 - z) * h + z * n
            inp = hs[k]
    return hs[-1]


@pytest.mark.parametrize("reset_after", [True, False])
def test_from_textbook_matches_textbook_cell(reset_after: bool):
    rng = np.random.default_rng(11)
    params = []
    for i, h in [(3, 6), (6, 4)]:
        params.append((rng.normal(size=(3 * h, i)), rng.normal(size=(3 * h, h)),
                       rng.normal(size=3 * h), rng.normal(size=3 * h)))
    layers = tuple(from_textbook(*p) for p in params)
    model = GRUModel(layers, reset_after=reset_after)
    x = rng.normal(size=(5, 7, 3))
    assert max_diff(float_forward(model, x).y, _textbook_forward(params, x, reset_after)) <= 1e-12


# ---- dispatch and generic user errors ----------------------------------------------------------


def test_missing_file_and_unknown_extension(tmp_path: Path):
    raises_user_error(tmp_path / "absent.onnx", "no such file")
    raises_user_error(tmp_path / "absent.pt", "no such file")
    odd = tmp_path / "model.tflite"
    odd.write_bytes(b"xx")
    raises_user_error(odd, "unknown model file type", ".tflite")
    bare = tmp_path / "model"
    bare.write_bytes(b"xx")
    raises_user_error(bare, "no extension")
    raises_user_error(tmp_path, "unknown model file type")
    folder = tmp_path / "dir.npz"
    folder.mkdir()
    raises_user_error(folder, "directory")


@pytest.mark.parametrize(
    "suffix, module",
    [(".pt", "torch"), (".pth", "torch"), (".onnx", "onnx"), (".keras", "h5py"),
     (".h5", "h5py"), (".npz", "numpy")],
)
@pytest.mark.parametrize("content", [b"\x00garbage\xff" * 20, b""])
def test_corrupt_files(tmp_path: Path, suffix: str, module: str, content: bytes):
    require(module)
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(content)
    raises_user_error(path)


@pytest.mark.parametrize("suffix, module, extra", [
    (".pt", "torch", "torch"), (".onnx", "onnx", "onnx"), (".keras", "h5py", "keras"),
])
def test_missing_framework_names_the_pip_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, module: str, extra: str
):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    raises_user_error(path, f"pip install gru-hw[{extra}]", f"'{module}'")


def test_require_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "gru_hw_no_such_module", None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="is required in CI"):
        require("gru_hw_no_such_module")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require("gru_hw_no_such_module")


def test_importers_do_not_import_frameworks_eagerly(tmp_path: Path):
    """Loading a native .npz must work without torch, onnx or h5py installed."""
    import subprocess

    path = tmp_path / "m.npz"
    _random_model(np.random.default_rng(0), True, True).save_npz(path)
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'h5py', 'keras'):\n"
        "    sys.modules[name] = None\n"
        "from gru_hw.importers import load_model\n"
        f"print(load_model({str(path)!r}).describe())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "GRU 3 -> 5 -> 4 -> dense 2" in out.stdout
