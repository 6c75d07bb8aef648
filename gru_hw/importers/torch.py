"""PyTorch ``state_dict`` importer (``.pt`` / ``.pth``).

Supported: the ``state_dict`` of an ``nn.GRU`` (keys ``weight_ih_l0`` ...) or of a module
holding exactly one ``nn.GRU`` under any attribute name (``rnn.weight_ih_l0``,
``encoder.gru.weight_hh_l1``), any ``num_layers``, ``bias`` either way, and optionally exactly one
``nn.Linear`` (``X.weight`` (O, H) with optional ``X.bias`` (O,)) whose input size is the top
layer's hidden size: it is the head, applied to the top layer's last hidden state. A state_dict
cannot show parameter-free operations (an activation after the Linear, which state feeds it): the
file is read as the GRU + linear head the interface documents. A training checkpoint
``{"model_state_dict": {...}, "optimizer": ...}`` is accepted when exactly one nested dict holds
the GRU.

PyTorch's gate order (r, z, n) and variant (reset_after) are already canonical.

Refused, with the key named: bidirectional GRUs (``*_reverse``), ``proj_size`` (``weight_hr_l*``),
LSTM/RNN weights (4H / H rows), several GRUs, several candidate Linear layers, any other tensors,
and whole pickled modules (``torch.save(model)``), which ``weights_only`` loading cannot read.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GruHwError
from ..model import GRUModel
from . import build_model, require, short

_GRU_KEY = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"_l(?P<layer>\d+)(?P<rev>_reverse)?$"
)


def load(path: Path) -> GRUModel:
    """Read a PyTorch ``state_dict`` file holding one ``nn.GRU`` and an optional ``nn.Linear``."""
    with warnings.catch_warnings():  # torch's own warnings (import, loading) are not ours to show
        warnings.simplefilter("ignore")
        torch = require("torch", "torch", path)
        obj = _torch_load(torch, path)
    state = _find_state_dict(torch, obj, path)
    return _from_state_dict(torch, state, path)


_SAVE_ADVICE = "save model.state_dict() instead (torch.save(model.state_dict(), path))"


def _torch_load(torch: Any, path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        text = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if m:
            raise GruHwError(_global_message(path, m.group(1))) from None
        if "TorchScript" in text:
            raise GruHwError(
                f"{path}: is a TorchScript archive (torch.jit.save), not a state_dict: save "
                "model.state_dict() instead"
            ) from None
        if "Weights only load failed" in text:
            raise GruHwError(_weights_only_message(path, text)) from None
        raise GruHwError(f"{path}: not a readable PyTorch file ({short(exc)})") from None


def _global_message(path: Path, name: str) -> str:
    what = "a pickled module" if name.startswith("torch.nn.") else "a pickled object"
    return (f"{path}: holds {what} ({name}), which the safe loader (weights_only) refuses to "
            f"unpickle: a state_dict holds only tensors; {_SAVE_ADVICE}")


def _weights_only_message(path: Path, text: str) -> str:
    """Say why the weights_only unpickler refused a file, as precisely as the file allows."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" and head[1:2] not in (b"\x02", b""):  # a raw pickle, protocol >= 3
        names = _pickle_globals(path)
        blocked = [n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))]
        held = f" holding {blocked[0]}" if blocked else ""
        return (f"{path}: a plain Python pickle (protocol {head[1]}, as written by pickle.dump)"
                f"{held}, not a torch.save file: the safe loader (weights_only) cannot read it; "
                f"{_SAVE_ADVICE}")
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    reason = m.group(1).strip() if m else "refused by the safe loader (weights_only)"
    return f"{path}: not a readable PyTorch state_dict file ({reason}); {_SAVE_ADVICE}"


def _pickle_globals(path: Path, limit: int = 1 << 16) -> list[str]:
    """Return the globals a raw pickle names, in order, without unpickling anything."""
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for i, (op, arg, _pos) in enumerate(pickletools.genops(f)):
                if i > limit:
                    break
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(str(arg))
                elif op.name == "GLOBAL" and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a truncated or odd pickle: report what was seen
        pass
    return names


def _has_gru_keys(torch: Any, obj: Mapping) -> bool:
    return any(
        isinstance(k, str) and _GRU_KEY.match(k) and isinstance(v, torch.Tensor)
        for k, v in obj.items()
    )


def _find_state_dict(torch: Any, obj: Any, path: Path) -> Mapping:
    if not isinstance(obj, Mapping):
        raise GruHwError(
            f"{path}: holds a {type(obj).__name__}, not a state_dict; "
            "save model.state_dict() instead"
        )
    if _has_gru_keys(torch, obj):
        return obj
    nested = [k for k, v in obj.items() if isinstance(v, Mapping) and _has_gru_keys(torch, v)]
    if len(nested) == 1:
        return obj[nested[0]]
    if len(nested) > 1:
        raise GruHwError(
            f"{path}: several entries hold GRU weights ({', '.join(map(repr, nested))}); "
            "save the state_dict of one model"
        )
    raise GruHwError(
        f"{path}: no nn.GRU weights found (expected keys like 'weight_ih_l0' or "
        "'rnn.weight_ih_l0')"
    )


def _to_numpy(torch: Any, key: str, value: Any, path: Path) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise GruHwError(f"{path}: '{key}' is a {type(value).__name__}, expected a tensor")
    if value.is_quantized or value.is_sparse or value.is_complex():
        raise GruHwError(f"{path}: '{key}' is a quantized, sparse or complex tensor")
    if not value.is_floating_point():
        raise GruHwError(f"{path}: '{key}' has dtype {value.dtype}, expected floating point")
    arr = value.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise GruHwError(f"{path}: '{key}' contains {bad} NaN or infinite value(s)")
    return arr


def _from_state_dict(torch: Any, state: Mapping, path: Path) -> GRUModel:
    gru: dict[str, dict[int, dict[str, str]]] = {}
    rest: dict[str, dict[str, str]] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise GruHwError(f"{path}: state_dict key {key!r} is not a string")
        m = _GRU_KEY.match(key)
        if m:
            if m.group("rev"):
                raise GruHwError(
                    f"{path}: bidirectional GRU (key '{key}'): only forward (unidirectional) "
                    "GRUs are supported"
                )
            if m.group("kind") == "weight_hr":
                raise GruHwError(
                    f"{path}: GRU with projections (key '{key}', proj_size > 0) is not supported"
                )
            layers = gru.setdefault(m.group("prefix"), {})
            layers.setdefault(int(m.group("layer")), {})[m.group("kind")] = key
            continue
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a version number: not a weight
        module, _, param = key.rpartition(".")
        rest.setdefault(module, {})[param] = key
    if len(gru) > 1:
        names = ", ".join(repr(p.rstrip(".") or "<top>") for p in sorted(gru))
        raise GruHwError(f"{path}: more than one nn.GRU ({names}); only one GRU is supported")
    prefix, by_layer = next(iter(gru.items()))
    where = prefix.rstrip(".") or "the GRU"
    count = max(by_layer) + 1
    missing_layers = sorted(set(range(count)) - set(by_layer))
    if missing_layers:
        raise GruHwError(
            f"{path}: {where}: no weights for layer {missing_layers[0]} "
            f"(missing '{prefix}weight_ih_l{missing_layers[0]}')"
        )
    layers = []
    for k in range(count):
        keys = by_layer[k]
        for kind in ("weight_ih", "weight_hh"):
            if kind not in keys:
                raise GruHwError(f"{path}: missing key '{prefix}{kind}_l{k}'")
        w_ih = _to_numpy(torch, keys["weight_ih"], state[keys["weight_ih"]], path)
        w_hh = _to_numpy(torch, keys["weight_hh"], state[keys["weight_hh"]], path)
        if w_hh.ndim != 2 or w_ih.ndim != 2:
            raise GruHwError(
                f"{path}: '{keys['weight_hh']}' {w_hh.shape} / '{keys['weight_ih']}' {w_ih.shape}: "
                "expected 2-D weights"
            )
        rows, hidden = w_hh.shape
        if rows != 3 * hidden:
            guess = {4 * hidden: " (4 x hidden rows: an LSTM?)", hidden: " (an nn.RNN?)"}
            kind = guess.get(rows, "")
            raise GruHwError(
                f"{path}: '{keys['weight_hh']}' has shape {tuple(w_hh.shape)}, expected "
                f"(3*hidden, hidden) for a GRU{kind}"
            )
        if w_ih.shape[0] != rows:
            raise GruHwError(
                f"{path}: '{keys['weight_ih']}' has shape {tuple(w_ih.shape)}, expected "
                f"({rows}, input_size)"
            )
        has_bias = ("bias_ih" in keys, "bias_hh" in keys)
        if has_bias[0] != has_bias[1]:
            have, miss = ("bias_ih", "bias_hh") if has_bias[0] else ("bias_hh", "bias_ih")
            raise GruHwError(
                f"{path}: '{prefix}{have}_l{k}' is present but '{prefix}{miss}_l{k}' is missing"
            )
        if has_bias[0]:
            b_ih = _to_numpy(torch, keys["bias_ih"], state[keys["bias_ih"]], path)
            b_hh = _to_numpy(torch, keys["bias_hh"], state[keys["bias_hh"]], path)
            for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
                if b.shape != (rows,):
                    raise GruHwError(
                        f"{path}: '{keys[name]}' has shape {tuple(b.shape)}, expected ({rows},)"
                    )
        else:  # nn.GRU(bias=False)
            b_ih = np.zeros(rows)
            b_hh = np.zeros(rows)
        layers.append((w_ih, w_hh, b_ih, b_hh))
    head = _find_head(torch, state, rest, path, layers)
    names = [f"{where} layer {k}" for k in range(count)]
    return build_model(path, layers, True, head, names)


def _find_head(
    torch: Any, state: Mapping, rest: dict[str, dict[str, str]], path: Path, layers: list
) -> tuple[np.ndarray, np.ndarray] | None:
    if not rest:
        return None
    hidden = layers[-1][1].shape[1]
    inputs = layers[0][0].shape[1]
    bad = [
        key
        for params in rest.values()
        if set(params) - {"weight", "bias"} or "weight" not in params
        for key in params.values()
    ]
    if bad:
        shown = ", ".join(repr(k) for k in sorted(bad)[:4]) + (" ..." if len(bad) > 4 else "")
        raise GruHwError(
            f"{path}: unexpected tensor(s) {shown} besides the nn.GRU and one nn.Linear head; "
            "only GRU + optional Linear models are supported"
        )
    if len(rest) > 1:
        names = ", ".join(repr(m) for m in sorted(rest))
        raise GruHwError(
            f"{path}: more than one layer besides the GRU ({names}); only one nn.Linear head "
            "applied to the last hidden state is supported"
        )
    module, params = next(iter(rest.items()))
    w = _to_numpy(torch, params["weight"], state[params["weight"]], path)
    if w.ndim != 2:
        raise GruHwError(
            f"{path}: '{params['weight']}' has shape {tuple(w.shape)}: not an nn.Linear weight; "
            "only GRU + optional Linear models are supported"
        )
    if w.shape[1] != hidden:
        raise GruHwError(
            f"{path}: '{params['weight']}' has shape {tuple(w.shape)}, but a Linear head must take "
            f"the top GRU layer's {hidden} hidden units (expected (O, {hidden}))"
        )
    if "bias" in params:
        b = _to_numpy(torch, params["bias"], state[params["bias"]], path)
        if b.shape != (w.shape[0],):
            raise GruHwError(
                f"{path}: '{params['bias']}' has shape {tuple(b.shape)}, expected ({w.shape[0]},)"
            )
    else:
        if inputs == hidden:
            # An embedding (V, E) feeding the GRU looks exactly like a bias-free Linear(H, V).
            raise GruHwError(
                f"{path}: '{params['weight']}' {tuple(w.shape)} without a bias is ambiguous: it "
                "could be an nn.Embedding feeding the GRU or a bias-free Linear head"
            )
        b = np.zeros(w.shape[0])
    return w, b
