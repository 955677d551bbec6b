"""``export``: a numbacnn model as an ONNX ModelProto, one table entry (or hook) per node.

Each node's entry gets an ``ExportCtx``: the ONNX names of its inputs and of the output it
must produce, its shapes, its weights, and helpers that add ONNX nodes, initializers and
functions. The first ONNX node an entry adds carries the graph node's name; any further
ones are named ``<node>/<op_type>``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np

from ..layer import Layer
from ._base import DOMAIN, MIN_IMPORT_OPSET, OnnxError, UnsupportedOperatorError
from ._table import exporter

__all__ = ["ExportCtx", "export_model", "build_model"]

BATCH_DIM = "N"
FreeShape = tuple["int | None", ...]


class _Builder:
    """What the entries add to: nodes, initializers, functions and opset imports."""

    def __init__(self, opset: int, dtype: np.dtype) -> None:
        import onnx

        self.onnx = onnx
        self.opset = opset
        self.dtype = dtype
        self.elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.functions: dict[tuple[str, str, str], Any] = {}
        self.opsets: dict[str, int] = {"": opset}
        self.node_names: set[str] = set()

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.node_names:
            k += 1
            name = f"{base}_{k}"
        self.node_names.add(name)
        return name


class ExportCtx:
    """What one node's ONNX entry sees and writes with (a plugin's ``onnx_export(self, ctx)``).

    ``node``: the graph node's name; ``layer``: the Layer object (its ``config`` holds the
    hyper-parameters); ``inputs``: the ONNX value names of its inputs; ``output``: the value
    name it must produce (``add(..., last=True)`` writes it); ``input_shapes`` /
    ``output_shape``: per-sample shapes (None where a size is free); ``opset``; ``dtype``: the
    model's NumPy dtype. ``helper`` is ``onnx.helper`` and ``onnx`` the onnx module, for
    building function bodies.
    """

    def __init__(self, builder: _Builder, node: str, layer: Layer, inputs: list[str], output: str,
                 input_shapes: list[FreeShape], output_shape: FreeShape, arrays: dict[str, np.ndarray]) -> None:
        self._b = builder
        self.node = node
        self.layer = layer
        self.config = layer.config
        self.inputs = inputs
        self.output = output
        self.input_shapes = input_shapes
        self.output_shape = output_shape
        self.opset = builder.opset
        self.dtype = builder.dtype
        self.elem_type = builder.elem_type
        self.helper = builder.onnx.helper
        self.onnx = builder.onnx
        self._arrays = arrays
        self._count = 0

    def param(self, key: str) -> str:
        """The initializer of this node's parameter or buffer ``key`` (named ``node.key``)."""
        name = f"{self.node}.{key}"
        if name not in self._b.initializers:
            if key not in self._arrays:
                raise OnnxError(f"{type(self.layer).name} node '{self.node}': it has no parameter or buffer "
                                f"'{key}' (it has: {', '.join(sorted(self._arrays)) or 'none'})")
            self._b.initializers[name] = self._b.onnx.numpy_helper.from_array(self._arrays[key], name)
        return name

    def constant(self, value: Any, suffix: str, dtype: Any = None) -> str:
        """An initializer ``node/suffix`` holding ``value`` (floats in the model's dtype unless
        ``dtype`` says otherwise; integers as int64)."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        name = f"{self.node}/{suffix}"
        self._b.initializers[name] = self._b.onnx.numpy_helper.from_array(arr.copy(order="C"), name)
        return name

    def add(self, op_type: str, inputs: Sequence[str], *, last: bool = False, outputs: int = 1,
            domain: str = "", overload: str = "", **attrs: Any) -> Any:
        """Add an ONNX node; returns its output name (a list when ``outputs`` > 1). ``last``:
        its (first) output is this node's output. Attributes whose value is None are left out."""
        self._count += 1
        name = self._b.unique(self.node if self._count == 1 else f"{self.node}/{op_type}")
        outs = [self.output if last and i == 0 else f"{self.node}/{op_type}_{self._count}_{i}"
                for i in range(outputs)]
        node = self.helper.make_node(op_type, list(inputs), outs, name=name, domain=domain,
                                     **{k: v for k, v in attrs.items() if v is not None})
        if overload:
            node.overload = overload
        if domain and domain not in self._b.opsets:
            self._b.opsets[domain] = 1
        self._b.nodes.append(node)
        return outs if outputs > 1 else outs[0]

    def function(self, fn: Any) -> None:
        """Declare a model-local ONNX function (a ``FunctionProto``), once per (domain, name,
        overload); a second, different body under the same key is an error."""
        key = (fn.domain, fn.name, getattr(fn, "overload", ""))
        old = self._b.functions.get(key)
        if old is not None and old.SerializeToString() != fn.SerializeToString():
            raise OnnxError(f"node '{self.node}': two different bodies for ONNX function {'.'.join(key[:2])} "
                            f"(overload {key[2]!r}); give each its own overload")
        self._b.functions[key] = fn
        self._b.opsets.setdefault(fn.domain, 1)

    def shape_free(self) -> bool:
        """Whether any input size is free (None): entries needing fixed sizes refuse then."""
        return any(d is None for s in self.input_shapes for d in s)

    def fail(self, why: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"{type(self.layer).name} node '{self.node}': cannot be exported to "
                                        f"ONNX: {why}")


def _value_info(helper: Any, name: str, elem_type: int, shape: FreeShape, free_prefix: str | None) -> Any:
    dims: list[Any] = [BATCH_DIM]
    for k, d in enumerate(shape, start=1):
        dims.append(d if d is not None else (f"{free_prefix}_dim{k}" if free_prefix else None))
    return helper.make_tensor_value_info(name, elem_type, dims)


def _no_entry(name: str, layer: Layer) -> UnsupportedOperatorError:
    from .. import registry

    lname = type(layer).name
    try:
        info = registry.layer_info(lname)
        who = f"{info['class']} from {info['distribution']} {info['version']}"
    except registry.UnknownLayerError:
        who = f"{type(layer).__module__}:{type(layer).__qualname__}"
    return UnsupportedOperatorError(
        f"{lname} node '{name}': layer '{lname}' ({who}) has no ONNX export. Give its class a method "
        f"onnx_export(self, ctx) that adds its ONNX nodes (see numbacnn.onnx.ExportCtx and the swish "
        f"plugin's), or remove the node")


def build_model(model: Any, opset: int) -> Any:
    """The ONNX ModelProto of ``model`` (checked by ``onnx.checker`` with full_check)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_IMPORT_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_IMPORT_OPSET} to {newest} (the newest this onnx "
                         f"{onnx.__version__} knows), found {opset!r}")
    b = _Builder(opset, model.dtype)
    state = model.state()
    graph, shapes = model.graph, model.shapes
    for name in model.order:
        node = graph.nodes[name]
        entry = exporter(node.obj)
        if entry is None:
            raise _no_entry(name, node.obj)
        arrays = {key.split("/", 1)[1].rpartition(".")[2]: value for key, value in state.items()
                  if key.split("/", 1)[1].rpartition(".")[0] == name}
        ctx = ExportCtx(b, name, node.obj, list(node.inputs), name, [shapes[i] for i in node.inputs],
                        shapes[name], arrays)
        entry(ctx)
        if not any(name in n.output for n in b.nodes):
            raise OnnxError(f"{node.layer} node '{name}': its ONNX entry wrote no node producing '{name}' "
                            f"(use ctx.add(..., last=True))")
    helper = onnx.helper
    inputs = [_value_info(helper, n, b.elem_type, shapes[n], n) for n in graph.inputs]
    outputs = [_value_info(helper, n, b.elem_type, shapes[n], None) for n in graph.outputs]
    g = helper.make_graph(b.nodes, "numbacnn", inputs, outputs, initializer=list(b.initializers.values()))
    opsets = [helper.make_opsetid(d, v) for d, v in b.opsets.items()]
    ir = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True),
             10 if any(key[2] for key in b.functions) else 0)
    proto = helper.make_model(g, opset_imports=opsets, ir_version=ir, functions=list(b.functions.values()),
                              producer_name="numbacnn", doc_string=f"numbacnn model; custom domain {DOMAIN}")
    from .._version import __version__

    proto.producer_version = __version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise OnnxError(f"the exported model fails onnx.checker (a bug in an ONNX entry): "
                        f"{str(e).strip().splitlines()[0]}") from None
    return proto


def export_model(model: Any, path: str | os.PathLike, opset: int) -> None:
    """Build, check and write atomically (an existing file is replaced only once complete)."""
    from ..model import Model

    if not isinstance(model, Model):
        raise TypeError(f"export() expects a numbacnn.Model, found {type(model).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: cannot write: the folder {folder} does not exist")
    data = build_model(model, opset).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
