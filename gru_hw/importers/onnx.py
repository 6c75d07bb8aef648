"""ONNX importer, using only the ``onnx`` package (never onnxruntime).

The graph is read by a small abstract interpreter rather than by matching fixed node patterns:

* constants (initializers, ``Constant`` nodes and anything computed only from them, including
  shape arithmetic on ``Shape`` outputs) are evaluated with ``onnx.reference``;
* tensors derived from the model input carry a label per axis ('T' time, 'N' batch, 'H' features,
  'L' a stack of layer states, '1' a size-one axis) and what they hold: the raw input, or the
  hidden state of GRU layer k, possibly with a dense head already applied. Dynamic dimensions get
  distinct stand-in sizes so that ``Shape`` -> ``Reshape`` chains can be followed exactly;
* only operations whose effect on those labels is known are accepted: Identity, Dropout, Cast (to
  float/double), Transpose, Squeeze, Unsqueeze, Reshape, Flatten, Gather/Slice (of the last time
  step, of a layer in a stack, or a no-op), Concat of layer states (PyTorch's ``h_n``), Shape, Size,
  and for the head Gemm (any transA/transB/alpha/beta) or MatMul + Add/Sub of a constant.

Accepted GRU nodes: forward direction, activations (Sigmoid, Tanh), no clip, layout 0 or 1, no
sequence_lens, zero (or absent) initial_h, static W/R/B; stacked nodes must each consume the
previous node's full Y sequence and share one ``linear_before_reset`` (1 -> reset_after=True,
0 -> reset_after=False). ONNX's gate order (z, r, h) is reordered to (r, z, n); ``B`` is
[Wb (3H), Rb (3H)]. The model's output must be the top layer's last hidden state (through the
head, if any); extra graph outputs holding GRU states (e.g. ``h_n``) are allowed and not computed.
Everything else is refused with a message naming the node, attribute and value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GruHwError
from ..model import GRUModel
from . import build_model, reorder_zrn_to_rzn, require, short

_FLOAT_TYPES = {1: "FLOAT", 11: "DOUBLE"}  # TensorProto element types a Cast may keep


@dataclass(frozen=True)
class _Const:
    """A statically known tensor."""

    value: np.ndarray


@dataclass(frozen=True)
class _Data:
    """A tensor that depends on a graph input.

    ``layers`` is () for the raw graph input, else the GRU layer(s) whose hidden state this is
    (several only along an 'L' axis). ``head`` is the dense map (W (O, H), b (O,)) applied so far.
    """

    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    source: str
    layers: tuple[int, ...] = ()
    head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def is_input(self) -> bool:
        return not self.layers


_Value = Any  # _Const | _Data


def load(path: Path) -> GRUModel:
    """Read an ONNX model holding stacked forward GRU nodes and an optional dense head."""
    onnx = require("onnx", "onnx", path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise GruHwError(f"{path}: not a readable ONNX file ({short(exc)})") from None
    if model.ir_version == 0 or not model.HasField("graph"):
        raise GruHwError(f"{path}: not an ONNX model (no graph; corrupt or wrong file type)")
    # Dynamic dimensions get stand-in sizes. Interpret twice with different stand-ins, so that a
    # selection or reshape that is only right for one particular length or batch is refused.
    first = _Interpreter(onnx, model, path, fake_start=97)
    result = first.run()
    if first.fake:
        again = _Interpreter(onnx, model, path, fake_start=211).run()
        mine, other = result.to_npz_dict(), again.to_npz_dict()
        if mine.keys() != other.keys() or any(
            not np.array_equal(mine[k], other[k]) for k in mine
        ):
            raise GruHwError(
                f"{path}: the graph computes a different model for different dynamic sizes"
            )
    return result


def _primes(start: int, count: int, avoid: set[int]) -> list[int]:
    out: list[int] = []
    n = start
    while len(out) < count:
        if n not in avoid and all(n % p for p in range(2, int(n**0.5) + 1)):
            out.append(n)
        n += 1
    return out


class _Interpreter:
    def __init__(self, onnx: Any, model: Any, path: Path, fake_start: int) -> None:
        self.onnx, self.model, self.graph, self.path = onnx, model, model.graph, path
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
        )
        if self.opset is None:
            raise GruHwError(f"{path}: the model imports no version of the standard ONNX opset")
        self.env: dict[str, _Value] = {}
        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.layer_nodes: list[str] = []
        self.lbr: int | None = None
        self.fake: set[int] = set()
        self.fake_start = fake_start

    # ---- messages ------------------------------------------------------------------------------
    def fail(self, node: Any, what: str) -> GruHwError:
        label = node.name or (node.output[0] if node.output else "?")
        return GruHwError(f"{self.path}: node '{label}' ({node.op_type}): {what}")

    # ---- setup ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        nh = self.onnx.numpy_helper
        static: set[int] = set()
        for init in self.graph.initializer:
            try:
                self.env[init.name] = _Const(np.asarray(nh.to_array(init)))
            except Exception as exc:
                raise GruHwError(
                    f"{self.path}: initializer '{init.name}' cannot be read ({short(exc)})"
                ) from None
            static.update(int(d) for d in init.dims)
        inputs = [i for i in self.graph.input if i.name not in self.env]
        for inp in inputs:
            for d in inp.type.tensor_type.shape.dim:
                if d.HasField("dim_value"):
                    static.add(int(d.dim_value))
        dims = sum(len(i.type.tensor_type.shape.dim) for i in inputs)
        fakes = iter(_primes(self.fake_start, dims + 1, static))
        by_param: dict[str, int] = {}
        for inp in inputs:
            ttype = inp.type.tensor_type
            if not ttype.HasField("shape"):
                # Unknown rank: usable only if nothing needs its axes; give it none.
                self.env[inp.name] = _Data((), (), inp.name)
                continue
            axes, sizes = [], []
            for i, d in enumerate(ttype.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    size = int(d.dim_value)
                else:
                    key = d.dim_param or f"{inp.name}:{i}"
                    if key not in by_param:
                        by_param[key] = next(fakes)
                    size = by_param[key]
                    self.fake.add(size)
                axes.append("1" if size == 1 else f"in{i}")
                sizes.append(size)
            self.env[inp.name] = _Data(tuple(axes), tuple(sizes), inp.name)

    def _needed(self) -> set[int]:
        producer = {}
        for idx, node in enumerate(self.graph.node):
            for out in node.output:
                if out:
                    producer[out] = idx
        needed: set[int] = set()
        stack = [o.name for o in self.graph.output]
        while stack:
            name = stack.pop()
            idx = producer.get(name)
            if idx is None or idx in needed:
                continue
            needed.add(idx)
            node = self.graph.node[idx]
            stack.extend(n for n in node.input if n)
            for attr in node.attribute:  # subgraphs may read outer values implicitly
                graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                for g in graphs:
                    for sub in g.node:
                        stack.extend(n for n in sub.input if n)
        return needed

    # ---- main loop -----------------------------------------------------------------------------
    def run(self) -> GRUModel:
        self._setup()
        needed = self._needed()
        for idx, node in enumerate(self.graph.node):
            if idx in needed:
                self._node(node)
        return self._finish()

    def _node(self, node: Any) -> None:
        ins: list[_Value | None] = []
        for name in node.input:
            if not name:
                ins.append(None)
            elif name in self.env:
                ins.append(self.env[name])
            else:
                raise self.fail(node, f"uses '{name}', which no node or initializer defines")
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"custom operator from domain '{node.domain}' is not supported")
        op = node.op_type
        if op == "GRU":
            self._gru(node, ins)
            return
        if not any(isinstance(v, _Data) for v in ins):
            if op in ("LSTM", "RNN"):
                raise self.fail(node, f"{op} layers are not supported, only GRU")
            self._fold(node, ins)
            return
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise self.fail(
                node,
                f"operation {op} on the GRU data path is not supported (only GRU nodes, layout "
                "wrappers, last-step selection and a Gemm/MatMul+Add head)",
            )
        outs = handler(node, ins)
        for name, value in zip(node.output, outs):
            if name:
                self.env[name] = value

    def _fold(self, node: Any, ins: list[_Value | None]) -> None:
        try:
            values = self._fold_common(node, [None if v is None else v.value for v in ins])
        except GruHwError:
            raise
        except Exception as exc:  # a malformed constant expression
            raise self.fail(node, f"cannot evaluate this constant expression ({short(exc)})")
        if values is None:  # anything else: the onnx package's reference implementation
            from onnx.reference import ReferenceEvaluator

            feeds = {n: v.value for n, v in zip(node.input, ins) if n and v is not None}
            try:
                values = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
            except Exception as exc:
                raise self.fail(node, f"cannot evaluate this constant expression ({short(exc)})")
        for name, value in zip(node.output, values):
            if name:
                self.env[name] = _Const(np.asarray(value))

    def _fold_common(self, node: Any, v: list[np.ndarray | None]) -> list[np.ndarray] | None:
        """Evaluate the constant (mostly shape-arithmetic) operations exporters emit.

        Written out here, for every opset, because ``onnx.reference`` mishandles some old-opset
        forms (e.g. Unsqueeze-11's attribute axes). Returns None for anything else.
        """
        op, attrs = node.op_type, self._attrs(node)
        nh = self.onnx.numpy_helper

        def axes_arg(i: int) -> list[int] | None:
            if i < len(v) and v[i] is not None:
                return [int(a) for a in np.asarray(v[i]).reshape(-1)]
            return [int(a) for a in attrs["axes"]] if "axes" in attrs else None

        if op == "Constant":
            if "value" in attrs:
                return [nh.to_array(attrs["value"])]
            simple = {"value_float": np.float32, "value_floats": np.float32,
                      "value_int": np.int64, "value_ints": np.int64}
            for key, dtype in simple.items():
                if key in attrs:
                    return [np.array(attrs[key], dtype=dtype)]
            return None
        if op in ("Identity", "Dropout"):
            return [v[0], np.ones(np.shape(v[0]), dtype=bool)][: len(node.output)]
        if op == "Cast":
            dtype = self.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
            return [np.asarray(v[0]).astype(dtype)]
        if op == "Shape":
            shape = np.array(np.shape(v[0]), dtype=np.int64)
            return [shape[slice(attrs.get("start", 0), attrs.get("end"))]]
        if op == "Size":
            return [np.array(np.size(v[0]), dtype=np.int64)]
        if op == "Unsqueeze":
            out = np.asarray(v[0])
            rank = out.ndim + len(axes_arg(1) or [])
            for a in sorted(a % rank for a in axes_arg(1) or []):
                out = np.expand_dims(out, a)
            return [out]
        if op == "Squeeze":
            axes = axes_arg(1)
            arr = np.asarray(v[0])
            return [np.squeeze(arr) if axes is None else np.squeeze(arr, axis=tuple(axes))]
        if op == "Concat":
            return [np.concatenate([np.asarray(a) for a in v if a is not None],
                                   axis=attrs.get("axis", 0))]
        if op == "Gather":
            return [np.take(np.asarray(v[0]), np.asarray(v[1]).astype(np.int64),
                            axis=attrs.get("axis", 0))]
        if op == "Reshape":
            target = [int(x) for x in np.asarray(v[1]).reshape(-1)]
            arr = np.asarray(v[0])
            if not attrs.get("allowzero", 0):
                target = [arr.shape[i] if t == 0 else t for i, t in enumerate(target)]
            return [arr.reshape(target)]
        if op == "Transpose":
            return [np.transpose(np.asarray(v[0]), attrs.get("perm"))]
        if op == "ConstantOfShape":
            fill = nh.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
            shape = [int(x) for x in np.asarray(v[0]).reshape(-1)]
            return [np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)]
        if op == "Expand":
            arr = np.asarray(v[0])
            shape = [int(x) for x in np.asarray(v[1]).reshape(-1)]
            return [arr * np.ones(shape, dtype=arr.dtype)]
        if op in ("Add", "Sub", "Mul") and len(v) == 2:
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]
            a, b = np.asarray(v[0]), np.asarray(v[1])
            return [fn(a, b).astype(np.result_type(a, b))]
        if op == "Slice" and self.opset >= 10:
            arr = np.asarray(v[0])
            starts = [int(x) for x in np.asarray(v[1]).reshape(-1)]
            ends = [int(x) for x in np.asarray(v[2]).reshape(-1)]
            axes = axes_arg(3) or list(range(len(starts)))
            steps = [int(x) for x in np.asarray(v[4]).reshape(-1)] if len(v) > 4 and v[4] \
                is not None else [1] * len(starts)
            index = [slice(None)] * arr.ndim
            for st, en, ax, sp in zip(starts, ends, axes, steps):
                index[ax % arr.ndim] = slice(st, en, sp)
            return [arr[tuple(index)]]
        return None

    # ---- helpers -------------------------------------------------------------------------------
    def _attrs(self, node: Any) -> dict[str, Any]:
        out = {}
        for a in node.attribute:
            v = self.onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list):
                v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
            out[a.name] = v
        return out

    def _const(self, node: Any, ins: list, i: int, what: str) -> np.ndarray | None:
        if i >= len(ins) or ins[i] is None:
            return None
        v = ins[i]
        if not isinstance(v, _Const):
            raise self.fail(node, f"{what} (input {i}) must be a constant, but depends on "
                                  f"graph input '{v.source}'")
        return v.value

    def _ints(self, node: Any, ins: list, i: int, attr: str) -> list[int] | None:
        """An integer list given as input ``i`` (newer opsets) or attribute ``attr`` (older)."""
        value = self._const(node, ins, i, attr)
        if value is not None:
            return [int(x) for x in np.asarray(value).reshape(-1)]
        attrs = self._attrs(node)
        return [int(x) for x in attrs[attr]] if attr in attrs else None

    def _data(self, node: Any, ins: list, i: int = 0) -> _Data:
        v = ins[i] if i < len(ins) else None
        if not isinstance(v, _Data):
            raise self.fail(node, "expected the data tensor as input 0")
        if not v.axes and not v.sizes and v.is_input:
            raise self.fail(node, f"graph input '{v.source}' has no declared shape")
        return v

    def _axis(self, node: Any, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            raise self.fail(node, f"axis {axis} out of range for rank {rank}")
        return axis % rank

    def _describe(self, label: str) -> str:
        return {"T": "time", "N": "batch", "H": "feature", "L": "layer", "1": "size-1"}.get(
            label, "input" if label.startswith("in") else f"merged ({label})"
        )

    # ---- layout operations ---------------------------------------------------------------------
    def _op_Identity(self, node: Any, ins: list) -> list:
        return [self._data(node, ins)]

    def _op_Dropout(self, node: Any, ins: list) -> list:
        training = self._const(node, ins, 2, "training_mode")
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise self.fail(node, "training_mode=True: dropout is not the identity")
        x = self._data(node, ins)
        return [x, _Const(np.ones(x.sizes, dtype=bool))]

    def _op_Cast(self, node: Any, ins: list) -> list:
        to = self._attrs(node).get("to")
        if to not in _FLOAT_TYPES:
            raise self.fail(node, f"Cast to element type {to}: only float/double keep the values")
        return [self._data(node, ins)]

    def _op_CastLike(self, node: Any, ins: list) -> list:
        target = self._const(node, ins, 1, "target type")
        if target is None or target.dtype not in (np.float32, np.float64):
            raise self.fail(node, "CastLike to a non-float type is not supported")
        return [self._data(node, ins)]

    def _op_Shape(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        attrs = self._attrs(node)
        rank = len(x.sizes)
        start = attrs.get("start", 0)
        end = attrs.get("end", rank)
        return [_Const(np.array(x.sizes[slice(start, end)], dtype=np.int64))]

    def _op_Size(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        return [_Const(np.array(int(np.prod(x.sizes, dtype=np.int64)), dtype=np.int64))]

    def _op_Transpose(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        perm = self._attrs(node).get("perm", list(range(len(x.axes)))[::-1])
        if sorted(perm) != list(range(len(x.axes))):
            raise self.fail(node, f"perm={perm} does not fit rank {len(x.axes)}")
        axes = tuple(x.axes[p] for p in perm)
        return [replace(x, axes=axes, sizes=tuple(x.sizes[p] for p in perm))]

    def _drop_axes(self, node: Any, x: _Data, axes: list[int]) -> _Data:
        labels, sizes = list(x.axes), list(x.sizes)
        for a in sorted(set(axes), reverse=True):
            if sizes[a] != 1:
                raise self.fail(
                    node, f"removes the {self._describe(labels[a])} axis {a} of size {sizes[a]}"
                )
            if labels[a] == "L" and len(x.layers) != 1:
                raise self.fail(node, "removes a stack of several layers")
            del labels[a], sizes[a]
        return replace(x, axes=tuple(labels), sizes=tuple(sizes))

    def _op_Squeeze(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        axes = self._ints(node, ins, 1, "axes")
        rank = len(x.axes)
        if axes is None:
            axes = [i for i, s in enumerate(x.sizes) if s == 1]
        return [self._drop_axes(node, x, [self._axis(node, a, rank) for a in axes])]

    def _op_Unsqueeze(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        axes = self._ints(node, ins, 1, "axes")
        if not axes:
            raise self.fail(node, "no axes given")
        rank = len(x.axes) + len(axes)
        axes = sorted(self._axis(node, a, rank) for a in axes)
        labels, sizes = list(x.axes), list(x.sizes)
        for a in axes:
            labels.insert(a, "1")
            sizes.insert(a, 1)
        return [replace(x, axes=tuple(labels), sizes=tuple(sizes))]

    def _regroup(self, node: Any, x: _Data, out_sizes: list[int]) -> _Data:
        """Relabel after a reshape that only merges/splits off size-1 axes or merges neighbours."""
        if int(np.prod(out_sizes, dtype=np.int64)) != int(np.prod(x.sizes, dtype=np.int64)):
            raise self.fail(node, f"cannot reshape {x.sizes} to {tuple(out_sizes)}")
        keep = [(lab, s) for lab, s in zip(x.axes, x.sizes) if s != 1]
        for lab, s in zip(x.axes, x.sizes):
            if s == 1 and lab == "L" and len(x.layers) != 1:
                raise self.fail(node, "reshapes a stack of several layers")
        labels: list[str] = []
        j = 0
        for s in out_sizes:
            if s == 1:
                labels.append("1")
                continue
            group, prod = [], 1
            while prod < s and j < len(keep):
                group.append(keep[j][0])
                prod *= keep[j][1]
                j += 1
            if prod != s:
                raise self.fail(
                    node, f"reshape {x.sizes} -> {tuple(out_sizes)} splits the "
                          f"{self._describe(group[-1] if group else '?')} axis"
                )
            labels.append("*".join(group))
        return replace(x, axes=tuple(labels), sizes=tuple(int(s) for s in out_sizes))

    def _op_Reshape(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        shape = self._const(node, ins, 1, "shape")
        if shape is None:  # opset < 5: attribute
            shape = np.asarray(self._attrs(node).get("shape", []))
        allowzero = self._attrs(node).get("allowzero", 0)
        out = [int(s) for s in np.asarray(shape).reshape(-1)]
        for i, s in enumerate(out):
            if s == 0 and not allowzero:
                if i >= len(x.sizes):
                    raise self.fail(node, f"shape {out} copies a missing dimension {i}")
                out[i] = x.sizes[i]
        if out.count(-1) > 1:
            raise self.fail(node, f"shape {out} has more than one -1")
        if -1 in out:
            known = int(np.prod([s for s in out if s != -1], dtype=np.int64))
            total = int(np.prod(x.sizes, dtype=np.int64))
            if known == 0 or total % known:
                raise self.fail(node, f"cannot reshape {x.sizes} to {out}")
            out[out.index(-1)] = total // known
        return [self._regroup(node, x, out)]

    def _op_Flatten(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        axis = self._attrs(node).get("axis", 1)
        rank = len(x.sizes)
        axis = axis % rank if -rank <= axis < 0 else axis
        out = [int(np.prod(x.sizes[:axis], dtype=np.int64)), int(np.prod(x.sizes[axis:],
                                                                           dtype=np.int64))]
        return [self._regroup(node, x, out)]

    def _select(self, node: Any, x: _Data, axis: int, idx: list[int], keep: bool) -> _Data:
        """Pick indices ``idx`` along ``axis`` (keep the axis if ``keep``)."""
        label, size = x.axes[axis], x.sizes[axis]
        layers = x.layers
        if label == "T":
            if idx != [size - 1]:
                of = "a dynamic length" if size in self.fake else f"{size} steps"
                raise self.fail(
                    node, f"selects time step(s) {self._shown(idx, size)} of {of}; only the "
                          "last step (index -1) is supported"
                )
            new_label = "1"
        elif label == "L":
            layers = tuple(x.layers[i] for i in idx)
            new_label = "L"
            if not keep and len(layers) != 1:
                raise self.fail(node, "selects several layers")
        elif idx == list(range(size)):
            new_label = label
        else:
            raise self.fail(
                node, f"selects indices {self._shown(idx, size)} of the "
                      f"{self._describe(label)} axis (size {size}); only the last time step, a "
                      "layer of a stack, or everything is supported"
            )
        labels, sizes = list(x.axes), list(x.sizes)
        if keep:
            labels[axis] = new_label
            sizes[axis] = len(idx)
        else:
            del labels[axis], sizes[axis]
        return replace(x, axes=tuple(labels), sizes=tuple(sizes), layers=layers)

    def _shown(self, idx: list[int], size: int) -> str:
        if size in self.fake:  # a dynamic axis: show indices relative to its end
            return str([i - size if i >= size // 2 else i for i in idx])
        return str(idx)

    def _op_Gather(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        indices = self._const(node, ins, 1, "indices")
        if indices is None or indices.ndim > 1:
            raise self.fail(node, "indices must be a constant scalar or vector")
        axis = self._axis(node, self._attrs(node).get("axis", 0), len(x.axes))
        size = x.sizes[axis]
        idx = [int(i) for i in indices.reshape(-1)]
        if any(not -size <= i < size for i in idx):
            raise self.fail(node, f"index {idx} out of range for size {size}")
        idx = [i % size for i in idx]
        return [self._select(node, x, axis, idx, keep=indices.ndim == 1)]

    def _op_Slice(self, node: Any, ins: list) -> list:
        x = self._data(node, ins)
        rank = len(x.axes)
        if self.opset < 10:
            attrs = self._attrs(node)
            starts, ends = attrs.get("starts", []), attrs.get("ends", [])
            axes = attrs.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts = self._ints(node, ins, 1, "starts") or []
            ends = self._ints(node, ins, 2, "ends") or []
            axes = self._ints(node, ins, 3, "axes") or list(range(len(starts)))
            steps = self._ints(node, ins, 4, "steps") or [1] * len(starts)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = self._axis(node, axis, rank)
            if step == 0:
                raise self.fail(node, "step 0")
            idx = list(range(*slice(start, end, step).indices(x.sizes[axis])))
            if not idx:
                raise self.fail(node, "selects nothing")
            x = self._select(node, x, axis, idx, keep=True)
        return [x]

    def _op_Concat(self, node: Any, ins: list) -> list:
        parts = [v for v in ins if v is not None]
        if not all(isinstance(v, _Data) and not v.is_input for v in parts):
            raise self.fail(node, "only concatenating GRU states (e.g. PyTorch's h_n) is supported")
        first = parts[0]
        axis = self._axis(node, self._attrs(node).get("axis", 0), len(first.axes))
        for v in parts:
            other_axes = v.axes[:axis] + v.axes[axis + 1:]
            other_sizes = v.sizes[:axis] + v.sizes[axis + 1:]
            if (v.axes[axis] != "L" or v.head is not None or len(v.axes) != len(first.axes)
                    or other_axes != first.axes[:axis] + first.axes[axis + 1:]
                    or other_sizes != first.sizes[:axis] + first.sizes[axis + 1:]):
                raise self.fail(
                    node, "only concatenating the final states of GRU layers along their "
                          "layer axis is supported"
                )
        layers = tuple(k for v in parts for k in v.layers)
        sizes = list(first.sizes)
        sizes[axis] = len(layers)
        return [replace(first, sizes=tuple(sizes), layers=layers)]

    # ---- the dense head ------------------------------------------------------------------------
    def _head_input(self, node: Any, x: _Data) -> None:
        if x.is_input:
            raise self.fail(node, "a dense layer on the model input (before the GRU) is not "
                                  "supported")
        if x.head is not None:
            raise self.fail(node, "a second dense layer after the head is not supported")
        if len(x.layers) != 1:
            raise self.fail(node, "a dense layer on a stack of several layers' states")
        if x.layers[0] != len(self.layers) - 1:
            raise self.fail(node, f"a dense layer on GRU layer {x.layers[0]}, which is not the "
                                  "top layer")

    def _op_MatMul(self, node: Any, ins: list) -> list:
        if not isinstance(ins[0], _Data) or not isinstance(ins[1], _Const):
            raise self.fail(node, "only state @ constant weight is supported")
        x, w = ins[0], ins[1].value
        self._head_input(node, x)
        if x.axes[-1] not in ("H", "1") or w.ndim not in (1, 2) or w.shape[0] != x.sizes[-1]:
            raise self.fail(node, f"multiplies the {self._describe(x.axes[-1])} axis of size "
                                  f"{x.sizes[-1]} by a weight of shape {w.shape}")
        w = np.asarray(w, dtype=np.float64)
        if w.ndim == 1:
            head = (w[None, :], np.zeros(1))
            return [replace(x, axes=x.axes[:-1], sizes=x.sizes[:-1], head=head)]
        head = (w.T.copy(), np.zeros(w.shape[1]))
        return [replace(x, sizes=x.sizes[:-1] + (w.shape[1],), axes=x.axes[:-1] + ("H",),
                        head=head)]

    def _op_Gemm(self, node: Any, ins: list) -> list:
        if not isinstance(ins[0], _Data) or not isinstance(ins[1], _Const):
            raise self.fail(node, "only Gemm(state, constant weight, constant bias) is supported")
        x = ins[0]
        self._head_input(node, x)
        attrs = self._attrs(node)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        axes, sizes = x.axes, x.sizes
        if len(axes) != 2:
            raise self.fail(node, f"input A has rank {len(axes)}, expected 2")
        if attrs.get("transA", 0):
            axes, sizes = axes[::-1], sizes[::-1]
        b = np.asarray(ins[1].value, dtype=np.float64)
        if b.ndim != 2:
            raise self.fail(node, f"weight B has shape {b.shape}, expected 2-D")
        if attrs.get("transB", 0):
            b = b.T
        if axes[1] not in ("H", "1") or b.shape[0] != sizes[1] or axes[0] == "H":
            raise self.fail(node, f"contracts the {self._describe(axes[1])} axis of size "
                                  f"{sizes[1]} with a weight of shape {b.shape}")
        out = b.shape[1]
        bias = np.zeros(out)
        c = self._const(node, ins, 2, "bias C")
        if c is not None:
            bias = beta * self._bias_vector(node, np.asarray(c, dtype=np.float64), out, "C")
        head = (alpha * b.T, bias)
        return [replace(x, axes=(axes[0], "H"), sizes=(sizes[0], out), head=head)]

    def _bias_vector(self, node: Any, c: np.ndarray, out: int, what: str) -> np.ndarray:
        """A constant that broadcasts along the output axis only, as an (out,) vector."""
        if c.ndim == 0 or c.size == 1:
            return np.full(out, float(c.reshape(-1)[0]))
        if any(s != 1 for s in c.shape[:-1]) or c.shape[-1] not in (1, out):
            raise self.fail(node, f"{what} of shape {c.shape} is not a per-output bias of size "
                                  f"{out}")
        return np.broadcast_to(c.reshape(-1), (out,)).astype(np.float64)

    def _op_Add(self, node: Any, ins: list, sign: float = 1.0) -> list:
        data = [v for v in ins if isinstance(v, _Data)]
        consts = [v for v in ins if isinstance(v, _Const)]
        if len(data) != 1 or len(consts) != 1:
            raise self.fail(node, f"{node.op_type} of two data tensors is not supported")
        x, c = data[0], np.asarray(consts[0].value, dtype=np.float64)
        if sign < 0 and not isinstance(ins[0], _Data):
            raise self.fail(node, "constant - state is not supported")
        if x.head is None:
            what = "model input" if x.is_input else "GRU state"
            raise self.fail(node, f"{node.op_type} of a constant to the {what} (not after a "
                                  "dense weight) is not supported")
        if c.ndim > len(x.sizes):
            raise self.fail(node, f"bias of shape {c.shape} adds axes to the output")
        out = x.head[0].shape[0]
        if x.axes and x.axes[-1] == "H" and x.sizes[-1] == out:
            vec = self._bias_vector(node, c, out, "the constant")
        elif c.size == 1:
            vec = np.full(out, float(c.reshape(-1)[0]))
        else:
            raise self.fail(node, f"constant of shape {c.shape} does not broadcast per output")
        head = (x.head[0], x.head[1] + sign * vec)
        return [replace(x, head=head)]

    def _op_Sub(self, node: Any, ins: list) -> list:
        return self._op_Add(node, ins, sign=-1.0)

    # ---- the GRU node --------------------------------------------------------------------------
    def _weight(self, node: Any, ins: list, i: int, name: str, required: bool) -> np.ndarray | None:
        v = ins[i] if i < len(ins) else None
        if v is None:
            if required:
                raise self.fail(node, f"input {name} is missing")
            return None
        if isinstance(v, _Data):
            raise self.fail(node, f"input {name} comes from graph input '{v.source}'; weights "
                                  "must be static initializers")
        arr = np.asarray(v.value)
        if arr.dtype.kind not in "fiu":
            raise self.fail(node, f"input {name} has dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise self.fail(node, f"input {name} contains NaN or infinite values")
        return arr

    def _gru(self, node: Any, ins: list) -> None:
        attrs = self._attrs(node)
        k = len(self.layers)
        direction = attrs.get("direction", "forward")
        if direction != "forward":
            raise self.fail(node, f"direction={direction!r}; only 'forward' is supported")
        acts = attrs.get("activations")
        if acts is not None and [str(a).lower() for a in acts] != ["sigmoid", "tanh"]:
            raise self.fail(node, f"activations={list(acts)}; only ['Sigmoid', 'Tanh'] is "
                                  "supported")
        if "clip" in attrs:
            raise self.fail(node, f"clip={attrs['clip']}: cell clipping is not supported")
        layout = attrs.get("layout", 0)
        if layout not in (0, 1):
            raise self.fail(node, f"layout={layout} is not a valid layout")
        lbr = attrs.get("linear_before_reset", 0)
        if lbr not in (0, 1):
            raise self.fail(node, f"linear_before_reset={lbr} is not valid")
        if self.lbr is not None and lbr != self.lbr:
            raise self.fail(node, f"linear_before_reset={lbr} but the GRU node below has "
                                  f"linear_before_reset={self.lbr}; one variant per model")
        w = self._weight(node, ins, 1, "W", True)
        r = self._weight(node, ins, 2, "R", True)
        b = self._weight(node, ins, 3, "B", False)
        if r.ndim != 3 or r.shape[0] != 1 or r.shape[1] != 3 * r.shape[2] or r.shape[2] == 0:
            raise self.fail(node, f"R has shape {r.shape}, expected [1, 3H, H]")
        hidden = r.shape[2]
        if "hidden_size" in attrs and attrs["hidden_size"] != hidden:
            raise self.fail(node, f"hidden_size={attrs['hidden_size']} but R has shape {r.shape}")
        if w.ndim != 3 or w.shape[:2] != (1, 3 * hidden) or w.shape[2] == 0:
            raise self.fail(node, f"W has shape {w.shape}, expected [1, {3 * hidden}, I]")
        inputs = w.shape[2]
        if b is None:
            b = np.zeros((1, 6 * hidden))
        if b.shape != (1, 6 * hidden):
            raise self.fail(node, f"B has shape {b.shape}, expected [1, {6 * hidden}]")
        if len(ins) > 4 and ins[4] is not None:
            raise self.fail(node, "the sequence_lens input is not supported (give per-sequence "
                                  "lengths in the INPUTS file instead)")
        if len(ins) > 5 and ins[5] is not None:
            h0 = ins[5]
            if isinstance(h0, _Data):
                raise self.fail(node, f"initial_h comes from graph input '{h0.source}'; only a "
                                      "zero initial state is supported")
            if np.any(np.asarray(h0.value) != 0):
                raise self.fail(node, f"non-zero initial_h (max |h0| = "
                                      f"{float(np.max(np.abs(h0.value))):g}); only a zero "
                                      "initial state is supported")
        x = self._data(node, ins, 0)
        t_ax, n_ax, f_ax = (0, 1, 2) if layout == 0 else (1, 0, 2)
        if len(x.axes) != 3:
            raise self.fail(node, f"input X has rank {len(x.axes)}, expected 3")
        if x.is_input:
            if k:
                raise self.fail(node, f"reads the model input '{x.source}' although GRU node "
                                      f"'{self.layer_nodes[-1]}' already does; only one stack "
                                      "of GRUs is supported")
            bad = [a for a in x.axes if a != "1" and not a.startswith("in")]
            if bad or len({a for a in x.axes if a != "1"}) != sum(a != "1" for a in x.axes):
                raise self.fail(node, f"input X mixes axes of the model input ({x.axes})")
        else:
            if x.layers != (k - 1,) or x.head is not None or x.axes[t_ax] != "T" \
                    or x.axes[f_ax] not in ("H", "1") or x.axes[n_ax] not in ("N", "1"):
                raise self.fail(node, "input X is not the full output sequence Y of the GRU "
                                      "node below it; only plainly stacked GRUs are supported")
        if x.sizes[f_ax] != inputs and x.sizes[f_ax] not in self.fake:
            raise self.fail(node, f"input X has {x.sizes[f_ax]} features but W has shape "
                                  f"{w.shape}")
        steps, batch = x.sizes[t_ax], x.sizes[n_ax]
        wb, rb = b[0, : 3 * hidden], b[0, 3 * hidden:]
        self.layers.append((
            reorder_zrn_to_rzn(w[0], hidden),
            reorder_zrn_to_rzn(r[0], hidden),
            reorder_zrn_to_rzn(wb, hidden),
            reorder_zrn_to_rzn(rb, hidden),
        ))
        self.layer_nodes.append(node.name or node.output[0])
        self.lbr = lbr
        outs = list(node.output) + ["", ""]
        if layout == 0:
            y = _Data(("T", "1", "N", "H"), (steps, 1, batch, hidden), x.source, (k,))
            yh = _Data(("L", "N", "H"), (1, batch, hidden), x.source, (k,))
        else:
            y = _Data(("N", "T", "1", "H"), (batch, steps, 1, hidden), x.source, (k,))
            yh = _Data(("N", "L", "H"), (batch, 1, hidden), x.source, (k,))
        if outs[0]:
            self.env[outs[0]] = y
        if outs[1]:
            self.env[outs[1]] = yh

    # ---- the result ----------------------------------------------------------------------------
    def _finish(self) -> GRUModel:
        if not self.layers:
            ops = sorted({n.op_type for n in self.graph.node})
            raise GruHwError(
                f"{self.path}: no GRU node found (operators: {', '.join(ops) or 'none'})"
            )
        top = len(self.layers) - 1
        outputs = []
        for out in self.graph.output:
            v = self.env.get(out.name)
            if not isinstance(v, _Data) or v.is_input:
                raise GruHwError(
                    f"{self.path}: graph output '{out.name}' does not come from the GRU"
                )
            merged = [a for a in v.axes if a not in ("T", "N", "H", "L", "1")]
            if merged:
                raise GruHwError(
                    f"{self.path}: graph output '{out.name}' has axes {v.axes} that mix the time, "
                    "batch or feature axes; not supported"
                )
            outputs.append((out.name, v))
        heads = [(n, v) for n, v in outputs if v.head is not None]
        if len(heads) > 1:
            raise GruHwError(
                f"{self.path}: {len(heads)} graph outputs apply a dense head; only one is supported"
            )
        head = None
        if heads:
            name, v = heads[0]
            if "T" in v.axes:
                raise GruHwError(
                    f"{self.path}: graph output '{name}' applies the head at every time step; "
                    "only the head on the last step is supported"
                )
            if v.layers != (top,):
                raise GruHwError(
                    f"{self.path}: graph output '{name}' applies the head to GRU layer "
                    f"{v.layers[0]}, not to the top layer"
                )
            head = v.head
        elif not any(top in v.layers for _, v in outputs):
            raise GruHwError(
                f"{self.path}: no graph output holds the top GRU layer's state "
                f"(node '{self.layer_nodes[-1]}')"
            )
        names = [f"GRU node '{n}'" for n in self.layer_nodes]
        return build_model(self.path, self.layers, bool(self.lbr), head, names)
