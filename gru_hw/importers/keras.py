"""Keras importer (``.keras`` and legacy full-model ``.h5``), without importing Keras.

A ``.keras`` file is a zip holding ``config.json`` (the architecture) and ``model.weights.h5``
(variables under ``layers/<snake_case_class>[_N]/[cell/]vars/<i>``, each ``vars`` group carrying
the layer's name). A legacy ``.h5`` holds a ``model_config`` JSON attribute and a ``model_weights``
group with one subgroup per layer name listing its ``weight_names``. Only ``zipfile``, ``json`` and
``h5py`` are used.

Supported: a ``Sequential`` or a chain-shaped ``Functional`` model of one or more ``GRU`` layers
(all but the top with ``return_sequences=True``), then optionally one ``Dense`` head with a linear
activation on the top layer's last state. ``InputLayer``, ``Masking``, dropout/noise layers
(identity at inference) are skipped; note that ``Masking`` is not emulated: pad at the end and give
``lengths`` instead. ``reset_after`` either way, ``use_bias`` either way, ``unroll``, ``stateful``
are fine. Keras's gate order (z, r, h) is reordered to (r, z, n) and the (in, out) kernels are
transposed. With ``reset_after=False`` the single bias goes into ``b_ih`` (``b_hh`` = 0), which is
exact because the n-gate bias is then added outside ``r * (...)``.

Refused, naming the layer and value: ``go_backwards``, ``return_state``, activations other than
``tanh`` / ``sigmoid`` (e.g. Keras 2's ``hard_sigmoid``), Dense activations other than linear, a
Dense applied to every time step, several Dense layers, any other layer type, nested models,
branching functional graphs, and mixed ``reset_after`` across layers.
"""

from __future__ import annotations

import functools
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import GruHwError
from ..model import GRUModel
from . import build_model, reorder_zrn_to_rzn, require, short

#: Layers that are the identity at inference time.
_PASSTHROUGH = {
    "InputLayer",
    "Masking",
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}
_LINEAR = (None, "linear", "Linear")
_FLAGS = ("go_backwards", "return_state", "time_major", "return_sequences", "reset_after",
          "use_bias", "stateful", "unroll")
#: What h5py raises on damaged files, at any access, not only when opening.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, UnicodeError, zlib.error)
_F = TypeVar("_F", bound=Callable[..., Any])


def _h5_guard(method: _F) -> _F:
    """Turn h5py's errors on a damaged file into a GruHwError naming the file."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except GruHwError:
            raise
        except _H5_ERRORS as exc:
            raise GruHwError(f"{self.path}: damaged HDF5 data ({short(exc)})") from None

    return wrapper  # type: ignore[return-value]


def load(path: Path) -> GRUModel:
    """Read a Keras ``.keras`` archive or legacy ``.h5`` full-model file."""
    h5py = require("h5py", "keras", path)
    if path.suffix.lower() == ".keras":
        config, weights = _open_keras_zip(h5py, path)
        legacy = False
    else:
        config, weights = _open_legacy_h5(h5py, path)
        legacy = True
    try:
        layers = _layer_chain(config, path)
        return _convert(layers, weights, legacy, config, path)
    finally:
        weights.close()


# ---- reading the containers ---------------------------------------------------------------------


def _open_keras_zip(h5py: Any, path: Path) -> tuple[dict, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise GruHwError(f"{path}: not a Keras archive (no config.json inside)")
            if "model.weights.h5" not in names:
                others = ", ".join(n for n in names if n.startswith("model.weights")) or "none"
                raise GruHwError(
                    f"{path}: no model.weights.h5 inside (weights files: {others}); only "
                    "unsharded HDF5 weights are supported"
                )
            config_bytes = archive.read("config.json")
            weight_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError,
            zlib.error) as exc:
        raise GruHwError(f"{path}: not a readable .keras archive ({short(exc)})") from None
    try:
        config = json.loads(config_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GruHwError(f"{path}: config.json is not valid JSON ({short(exc)})") from None
    try:
        weights = h5py.File(io.BytesIO(weight_bytes), "r")
    except (OSError, ValueError) as exc:
        raise GruHwError(
            f"{path}: model.weights.h5 is not a readable HDF5 file ({short(exc)})"
        ) from None
    if not isinstance(config, dict):
        weights.close()
        raise GruHwError(f"{path}: config.json does not describe a model")
    return config, weights


def _open_legacy_h5(h5py: Any, path: Path) -> tuple[dict, Any]:
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise GruHwError(f"{path}: not a readable HDF5 file ({short(exc)})") from None
    try:
        try:
            raw = f.attrs.get("model_config")
            has_weights = "model_weights" in f
            weights_only = "layers" in f or "layer_names" in f.attrs
        except _H5_ERRORS as exc:
            raise GruHwError(f"{path}: damaged HDF5 data ({short(exc)})") from None
        if raw is None:
            hint = " (a weights-only file?)" if weights_only else ""
            raise GruHwError(
                f"{path}: no model_config attribute: not a full Keras model file{hint}; save the "
                "whole model with model.save('model.keras')"
            )
        if not has_weights:
            raise GruHwError(f"{path}: no model_weights group: the file holds no weights")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        config = json.loads(str(raw))
        if not isinstance(config, dict):
            raise GruHwError(f"{path}: model_config does not describe a model")
    except (ValueError, UnicodeDecodeError) as exc:
        f.close()
        raise GruHwError(f"{path}: model_config is not valid JSON ({short(exc)})") from None
    except GruHwError:
        f.close()
        raise
    return config, f


# ---- the architecture ---------------------------------------------------------------------------


def _layer_chain(config: dict, path: Path) -> list[dict]:
    """The model's layers from input to output as a list of ``{class_name, config, name}``."""
    cls = config.get("class_name")
    body = config.get("config")
    if cls == "Sequential":
        layers = body.get("layers") if isinstance(body, dict) else body
        if not isinstance(layers, list):
            raise GruHwError(f"{path}: Sequential model without a layer list")
        return [_norm_layer(l, path) for l in layers]
    if cls in ("Functional", "Model"):
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise GruHwError(f"{path}: functional model without a layer list")
        return _functional_chain(body, path)
    raise GruHwError(
        f"{path}: model class '{cls}' is not supported (expected a Sequential or functional model; "
        "subclassed models cannot be read without their code)"
    )


def _norm_layer(layer: Any, path: Path) -> dict:
    if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
        raise GruHwError(f"{path}: malformed layer entry in the model config")
    cfg = layer["config"]
    name = str(layer.get("name") or cfg.get("name") or "?")
    cls = layer.get("class_name")
    if not isinstance(cls, str):
        raise GruHwError(f"{path}: layer '{name}' has a malformed class_name {cls!r}")
    for flag in _FLAGS:
        if flag in cfg and not isinstance(cfg[flag], bool):
            raise GruHwError(f"{path}: layer '{name}' has {flag}={cfg[flag]!r}, not a boolean")
    return {"class_name": cls, "config": cfg, "name": name, "raw": layer}


def _history_names(obj: Any) -> list[str]:
    """Layer names of the Keras-3 ``__keras_tensor__`` references found in ``obj``."""
    found: list[str] = []
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            inner = obj.get("config")
            hist = inner.get("keras_history") if isinstance(inner, dict) else None
            if isinstance(hist, list) and hist:
                found.append(str(hist[0]))
        else:
            for v in obj.values():
                found.extend(_history_names(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_history_names(v))
    return found


def _inputs_of(layer: dict, path: Path) -> list[str]:
    nodes = layer["raw"].get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise GruHwError(f"{path}: malformed inbound_nodes of layer '{layer['name']}'")
    if len(nodes) > 1:
        raise GruHwError(
            f"{path}: layer '{layer['name']}' is called {len(nodes)} times (shared layer); "
            "only a simple chain of layers is supported"
        )
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}; masks live in kwargs
        return _history_names(node.get("args", []))
    if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        return [str(entry[0]) for entry in node if isinstance(entry, list) and entry]
    raise GruHwError(f"{path}: malformed inbound_nodes of layer '{layer['name']}'")


def _endpoints(spec: Any, what: str, path: Path) -> str:
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        spec = [spec]
    if not isinstance(spec, list) or len(spec) != 1 or not isinstance(spec[0], list):
        count = len(spec) if isinstance(spec, list) else "?"
        raise GruHwError(f"{path}: the model has {count} {what}; exactly one is supported")
    return str(spec[0][0])


def _functional_chain(body: dict, path: Path) -> list[dict]:
    layers = {}
    for raw in body["layers"]:
        layer = _norm_layer(raw, path)
        layers[layer["name"]] = layer
    first = _endpoints(body.get("input_layers"), "inputs", path)
    name = _endpoints(body.get("output_layers"), "outputs", path)
    chain = []
    seen = set()
    while True:
        if name not in layers or name in seen:
            raise GruHwError(f"{path}: layer '{name}' of the functional graph is missing or cyclic")
        seen.add(name)
        layer = layers[name]
        chain.append(layer)
        if name == first:
            break
        inputs = _inputs_of(layer, path)
        if len(inputs) != 1:
            raise GruHwError(
                f"{path}: layer '{name}' ({layer['class_name']}) takes {len(inputs)} inputs; only "
                "a simple chain of layers is supported"
            )
        name = inputs[0]
    chain.reverse()
    return chain


# ---- the conversion -----------------------------------------------------------------------------


def _activation_name(value: Any) -> Any:
    if isinstance(value, dict):  # serialized function or Activation object
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        if isinstance(inner, dict) and "name" in inner:
            return inner["name"]
        return value.get("class_name")
    return value


def _check_gru(layer: dict, path: Path) -> None:
    cfg, name = layer["config"], layer["name"]
    checks = [
        ("go_backwards", False),
        ("return_state", False),
        ("time_major", False),
    ]
    for attr, ok in checks:
        if bool(cfg.get(attr, ok)) != ok:
            raise GruHwError(
                f"{path}: GRU '{name}' has {attr}={cfg.get(attr)!r}; only {attr}={ok} is supported"
            )
    act = _activation_name(cfg.get("activation", "tanh"))
    if act != "tanh":
        raise GruHwError(
            f"{path}: GRU '{name}' has activation={act!r}; only 'tanh' is supported"
        )
    rec = _activation_name(cfg.get("recurrent_activation", "sigmoid"))
    if rec != "sigmoid":
        raise GruHwError(
            f"{path}: GRU '{name}' has recurrent_activation={rec!r}; only 'sigmoid' is supported "
            "(Keras 3's default)"
        )


def _convert(chain: list[dict], weights: Any, legacy: bool, config: dict, path: Path) -> GRUModel:
    grus: list[dict] = []
    dense: dict | None = None
    for layer in chain:
        cls, name, cfg = layer["class_name"], layer["name"], layer["config"]
        if cls in _PASSTHROUGH:
            continue
        if cls == "GRU":
            if dense is not None:
                raise GruHwError(
                    f"{path}: GRU '{name}' follows Dense '{dense['name']}'; only a Dense head "
                    "after the last GRU is supported"
                )
            _check_gru(layer, path)
            if grus and not grus[-1]["config"].get("return_sequences", False):
                raise GruHwError(
                    f"{path}: GRU '{grus[-1]['name']}' feeds GRU '{name}' but has "
                    "return_sequences=False"
                )
            grus.append(layer)
        elif cls == "Dense":
            if dense is not None:
                raise GruHwError(
                    f"{path}: more than one Dense layer ('{dense['name']}', '{name}'); only one "
                    "linear Dense head is supported"
                )
            if not grus:
                raise GruHwError(f"{path}: Dense '{name}' comes before any GRU layer")
            act = _activation_name(cfg.get("activation", "linear"))
            if act not in _LINEAR:
                raise GruHwError(
                    f"{path}: Dense '{name}' has activation={act!r}; only a linear head "
                    "(activation=None / 'linear') is supported"
                )
            if cfg.get("quantization_config") or cfg.get("quantization_mode"):
                raise GruHwError(f"{path}: Dense '{name}' is quantized; not supported")
            if grus[-1]["config"].get("return_sequences", False):
                raise GruHwError(
                    f"{path}: Dense '{name}' is applied to every time step (GRU "
                    f"'{grus[-1]['name']}' has return_sequences=True); only a head on the last "
                    "state is supported"
                )
            dense = layer
        elif cls in ("Sequential", "Functional", "Model"):
            raise GruHwError(f"{path}: nested model '{name}' ({cls}) is not supported")
        else:
            raise GruHwError(
                f"{path}: layer '{name}' of type {cls} is not supported (only GRU, a linear Dense "
                "head, and InputLayer/Masking/Dropout)"
            )
    if not grus:
        raise GruHwError(f"{path}: no GRU layer in the model")
    variants = {bool(g["config"].get("reset_after", True)) for g in grus}
    if len(variants) > 1:
        detail = ", ".join(
            f"'{g['name']}' {bool(g['config'].get('reset_after', True))}" for g in grus
        )
        raise GruHwError(
            f"{path}: GRU layers mix reset_after values ({detail}); one variant per model"
        )
    reset_after = variants.pop()
    locate = _LegacyWeights(weights, path) if legacy else _KerasWeights(weights, config, path)
    layers = []
    for g in grus:
        layers.append(_gru_arrays(g, locate.get(g, ("kernel", "recurrent_kernel", "bias")), path))
    head = None
    if dense is not None:
        found = locate.get(dense, ("kernel", "bias"))
        kernel = found.get("kernel")
        if kernel is None or kernel.ndim != 2:
            raise GruHwError(f"{path}: Dense '{dense['name']}': no 2-D kernel in the weights")
        bias = found.get("bias")
        if bias is None:
            if dense["config"].get("use_bias", True):
                raise GruHwError(f"{path}: Dense '{dense['name']}': bias missing from the weights")
            bias = np.zeros(kernel.shape[1])
        if bias.shape != (kernel.shape[1],):
            raise GruHwError(
                f"{path}: Dense '{dense['name']}': bias has shape {bias.shape}, expected "
                f"({kernel.shape[1]},)"
            )
        head = (kernel.T, bias)
    names = [f"GRU '{g['name']}'" for g in grus]
    return build_model(path, layers, reset_after, head, names)


def _gru_arrays(
    layer: dict, found: dict[str, np.ndarray], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cfg, name = layer["config"], layer["name"]
    reset_after = bool(cfg.get("reset_after", True))
    kernel = found.get("kernel")
    rec = found.get("recurrent_kernel")
    if kernel is None or rec is None:
        raise GruHwError(
            f"{path}: GRU '{name}': kernel or recurrent_kernel missing from the weights"
        )
    if rec.ndim != 2 or rec.shape[1] != 3 * rec.shape[0]:
        raise GruHwError(
            f"{path}: GRU '{name}': recurrent_kernel has shape {rec.shape}, expected (H, 3H)"
        )
    hidden = rec.shape[0]
    units = cfg.get("units")
    if units is not None and (not isinstance(units, int) or units != hidden):
        raise GruHwError(
            f"{path}: GRU '{name}': recurrent_kernel has shape {rec.shape} but units={units}"
        )
    if kernel.ndim != 2 or kernel.shape[1] != 3 * hidden:
        raise GruHwError(
            f"{path}: GRU '{name}': kernel has shape {kernel.shape}, expected (I, {3 * hidden})"
        )
    w_ih = reorder_zrn_to_rzn(kernel.T, hidden)
    w_hh = reorder_zrn_to_rzn(rec.T, hidden)
    bias = found.get("bias")
    zeros = np.zeros(3 * hidden)
    if bias is None:
        if cfg.get("use_bias", True):
            raise GruHwError(f"{path}: GRU '{name}': bias missing from the weights")
        return w_ih, w_hh, zeros, zeros.copy()
    if reset_after:
        if bias.shape != (2, 3 * hidden):
            raise GruHwError(
                f"{path}: GRU '{name}': bias has shape {bias.shape}, expected (2, {3 * hidden}) "
                "for reset_after=True"
            )
        return w_ih, w_hh, reorder_zrn_to_rzn(bias[0], hidden), reorder_zrn_to_rzn(bias[1], hidden)
    if bias.shape != (3 * hidden,):
        raise GruHwError(
            f"{path}: GRU '{name}': bias has shape {bias.shape}, expected ({3 * hidden},) for "
            "reset_after=False"
        )
    return w_ih, w_hh, reorder_zrn_to_rzn(bias, hidden), zeros


def _array(dataset: Any, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(dataset[()])
    except (OSError, ValueError, TypeError) as exc:
        raise GruHwError(f"{path}: cannot read {what} ({short(exc)})") from None
    if arr.dtype.kind not in "fiu":
        raise GruHwError(f"{path}: {what} has dtype {arr.dtype}, expected real numbers")
    return arr.astype(np.float64)


class _KerasWeights:
    """Variables of a Keras-3 ``model.weights.h5``, found by layer name or by Keras's path rule."""

    @_h5_guard
    def __init__(self, f: Any, config: dict, path: Path) -> None:
        self.f, self.path = f, path
        self.by_name: dict[str, Any] = {}
        root = f.get("layers")
        if root is None:
            raise GruHwError(f"{path}: model.weights.h5 has no 'layers' group")
        for key in root:
            group = root[key]
            vars_group = group.get("vars") if hasattr(group, "get") else None
            name = vars_group.attrs.get("name") if vars_group is not None else None
            if isinstance(name, bytes):
                name = name.decode()
            if name:
                self.by_name[str(name)] = group
        # Keras's own path rule: model.layers in order, snake_case(class), de-duplicated.
        self.by_path: dict[str, Any] = {}
        body = config.get("config")
        entries = body.get("layers", []) if isinstance(body, dict) else body or []
        used: dict[str, int] = {}
        for raw in entries:
            if not isinstance(raw, dict):
                continue
            base = _snake_case(str(raw.get("class_name", "")))
            if base in used:
                used[base] += 1
                key = f"{base}_{used[base]}"
            else:
                used[base] = 0
                key = base
            lname = raw.get("name") or (raw.get("config") or {}).get("name")
            if key in root and lname:
                self.by_path[str(lname)] = root[key]

    @_h5_guard
    def get(self, layer: dict, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Variables of ``layer`` in Keras's build order, named as ``wanted``."""
        name = layer["name"]
        group = self.by_name.get(name) or self.by_path.get(name)
        if group is None:
            raise GruHwError(f"{self.path}: no weights for layer '{name}' in model.weights.h5")
        vars_group = group.get("cell/vars") if "cell" in group else None
        if vars_group is None or len(vars_group) == 0:
            vars_group = group.get("vars")
        if vars_group is None:
            raise GruHwError(f"{self.path}: no variables for layer '{name}' in model.weights.h5")
        keys = sorted(vars_group, key=lambda k: int(k) if str(k).isdigit() else 1 << 30)
        arrays = [_array(vars_group[k], f"weights of layer '{name}'", self.path) for k in keys]
        return _assign(arrays, wanted, layer, self.path)


class _LegacyWeights:
    """Variables of a legacy ``.h5`` full-model file (``model_weights/<layer>/weight_names``)."""

    def __init__(self, f: Any, path: Path) -> None:
        self.path = path
        self.root = self._root(f)

    @_h5_guard
    def _root(self, f: Any) -> Any:
        return f["model_weights"]

    @_h5_guard
    def get(self, layer: dict, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Variables of ``layer`` matched by the last component of their weight names."""
        name = layer["name"]
        if name not in self.root:
            raise GruHwError(f"{self.path}: no weights for layer '{name}' in model_weights")
        group = self.root[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get(
            "weight_names", [])]
        found: dict[str, np.ndarray] = {}
        for wname in names:
            if wname not in group:
                raise GruHwError(f"{self.path}: weight '{wname}' of layer '{name}' is missing")
            short_name = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            found[short_name] = _array(group[wname], f"weight '{wname}'", self.path)
        if not found:
            raise GruHwError(f"{self.path}: layer '{name}' has no weights in model_weights")
        return found


def _assign(arrays: list[np.ndarray], wanted: tuple[str, ...], layer: dict, path: Path) -> dict:
    """Name positional variables: (kernel, recurrent_kernel, bias) or (kernel, bias)."""
    if len(arrays) > len(wanted) or not arrays:
        raise GruHwError(
            f"{path}: layer '{layer['name']}' has {len(arrays)} variables, expected "
            f"{', '.join(wanted)}"
        )
    return dict(zip(wanted, arrays))


def _snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
