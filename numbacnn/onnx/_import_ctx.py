"""What an importer works with: ``Value`` (a value of the data path), the state of one load
and ``ImportCtx``, through which an ONNX node's importer reads its attributes and inputs and
adds numbacnn layers. Layers are recorded (``Record``) and built into a Graph at the end,
so an importer can still complete the layer that produced its input (MatMul's bias from the
Add that follows it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import registry
from ..graph import GraphError, make_layer
from ..layer import ShapeError
from ._base import UnsupportedOperatorError
from ._fold import BATCH, Const, batch_dims
from ._table import builtin_importers, op_label, plugin_importers

__all__ = ["ImportCtx", "Value", "BATCH", "sanitise"]


@dataclass(frozen=True)
class Value:
    """A value of the data path: the numbacnn node producing it and its per-sample shapes.

    ``onnx_shape`` is the shape ONNX gives it, which may differ from numbacnn's ``shape`` only
    by size-1 axes (GlobalAveragePool gives (C, 1, 1), numbacnn's global_avg_pool2d (C,)).
    ``pads``: a Pad waiting to be folded into the convolution or pooling that reads it
    (begins, ends, fill value, and the Pad node's name).
    """

    node: str
    shape: tuple[int, ...]
    onnx_shape: tuple[int, ...]
    pads: tuple[Any, ...] | None = None


@dataclass
class Record:
    name: str
    layer: str
    config: dict[str, Any]
    inputs: list[str]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    onnx_node: str = ""


def sanitise(name: str) -> str:
    """An ONNX name as a numbacnn node name: ``/layer1/0/conv1/Conv`` -> ``layer1.0.conv1.Conv``."""
    s = re.sub(r"[/:]+", ".", name)
    s = re.sub(r"[^A-Za-z0-9_.\-]", "_", s)
    return re.sub(r"\.{2,}", ".", s).strip(".")


class LoadState:
    """State of one load: values by ONNX name, the records, the names taken."""

    def __init__(self, path: str, proto: Any, dtype: Any, probe: int | None = None) -> None:
        self.path = path
        # the size free input sizes are set to in this pass (None: the inputs' sizes are fixed),
        # and what importers noted as depending on a size: (ONNX node, what) -> value
        self.probe = probe
        self.size_notes: dict[tuple[str, str], Any] = {}
        self.proto = proto
        self.dtype = np.dtype(dtype)
        self.opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in proto.opset_import}
        self.values: dict[str, Value | Const] = {}
        self.records: list[Record] = []
        self.by_name: dict[str, Record] = {}
        self.taken: set[str] = set()
        # batch sizes the file's inputs fix (a Reshape may name the batch by its size then)
        inits = {t.name for t in proto.graph.initializer}
        self.static_batch = {d.dim_value for vi in proto.graph.input if vi.name not in inits
                             for d in vi.type.tensor_type.shape.dim[:1] if d.HasField("dim_value")}
        self.readers: dict[str, int] = {}
        for node in proto.graph.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        for out in proto.graph.output:
            self.readers[out.name] = self.readers.get(out.name, 0) + 1
        self.builtin = builtin_importers()
        self._plugins: dict[tuple[str, str], tuple[str, Any]] | None = None

    def plugins(self) -> dict[tuple[str, str], tuple[str, Any]]:
        if self._plugins is None:
            self._plugins = plugin_importers()
        return self._plugins

    def unique(self, base: str) -> str:
        base = base or "node"
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def supported(self) -> str:
        ops = sorted({op_label(k) for k in self.builtin} | {op_label(k) for k in self.plugins()})
        return (f"{', '.join(ops)}; and any standard operator whose inputs are all constant "
                f"(folded at load)")


class ImportCtx:
    """What one ONNX node's importer sees (a plugin's ``onnx_import(cls, ctx)``).

    ``op_type``, ``domain``, ``opset`` (of the node's domain), ``onnx_name`` (the ONNX node's
    name) and ``name`` (the numbacnn node name made from it); ``attrs``: its attributes as
    Python values. Inputs are read by position: ``const(i)`` (a constant-valued input as a
    NumPy array), ``value(i)`` (a data input, a ``Value``). ``layer(...)`` adds a numbacnn
    layer producing the node's output; ``alias(value)`` passes a value through instead.
    """

    def __init__(self, imp: LoadState, node: Any, name: str) -> None:
        import onnx

        self._imp = imp
        self.node = node
        self.op_type = node.op_type
        self.domain = node.domain if node.domain != "ai.onnx" else ""
        self.opset = imp.opsets.get(self.domain, 1)
        self.onnx_name = node.name or (node.output[0] if node.output else node.op_type)
        self.name = name
        self.dtype = imp.dtype
        self.static_batch = imp.static_batch
        self.probing = imp.probe is not None
        self.attrs: dict[str, Any] = {}
        for a in node.attribute:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, onnx.TensorProto):
                v = onnx.numpy_helper.to_array(v)
            self.attrs[a.name] = v
        self._layers = 0

    # reading -------------------------------------------------------------------------------
    def fail(self, what: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"{self._imp.path}: ONNX node '{self.onnx_name}' ({op_label((self.domain, self.op_type))}, "
                                        f"opset {self.opset}): {what}")

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def expect_attrs(self, supported: Sequence[str]) -> None:
        """Refuse attributes this importer does not understand (rather than ignore them)."""
        extra = sorted(set(self.attrs) - set(supported))
        if extra:
            raise self.fail(f"attribute {', '.join(repr(a) for a in extra)} is not supported (supported: "
                            f"{', '.join(sorted(supported)) or 'none'})")

    def depends_on_size(self, what: str, sizes: Any) -> None:
        """Note that ``what`` (e.g. an auto_pad's padding) follows the input sizes ``sizes`` it
        was computed from: where they follow a free input size, the load refuses the node."""
        self._imp.size_notes[(self.onnx_name, what)] = sizes

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def _get(self, i: int) -> Value | Const:
        name = self.node.input[i]
        if name not in self._imp.values:
            raise self.fail(f"input '{name}' is not produced by any earlier node or graph input")
        return self._imp.values[name]

    def is_const(self, i: int) -> bool:
        return self.has(i) and isinstance(self._get(i), Const)

    def const(self, i: int, default: Any = None, what: str = "") -> Any:
        """Input ``i`` as a NumPy array (``default`` when omitted); an input computed from the
        data is an error naming ``what`` it is."""
        if not self.has(i):
            return default
        v = self._get(i)
        label = what or f"input {i}"
        if isinstance(v, Value):
            raise self.fail(f"{label} ('{self.node.input[i]}') must be a constant (an initializer or "
                            f"something computed from constants only), but it is computed from the data")
        if v.dual:
            raise self.fail(f"{label} ('{self.node.input[i]}') depends on the batch size; numbacnn needs it constant")
        return v.a

    def shape_const(self, i: int, what: str = "") -> list[Any]:
        """A constant shape vector that may hold the batch size (as ``BATCH``)."""
        v = self._get(i)
        label = what or f"input {i}"
        if isinstance(v, Value):
            raise self.fail(f"{label} must be a constant shape, but it is computed from the data")
        dims = batch_dims(v)
        if dims is None:
            raise self.fail(f"{label} ('{self.node.input[i]}') depends on the batch size in a way numbacnn "
                            f"cannot follow (only the batch size itself may appear in it)")
        return dims

    def value(self, i: int, pads_ok: bool = False, exact: bool = True) -> Value:
        """Data input ``i``. ``exact``: numbacnn must hold it in ONNX's shape (layers that read
        the layout do; elementwise ones pass False). A pending Pad is refused unless
        ``pads_ok`` (convolutions and pools, which fold it)."""
        if not self.has(i):
            raise self.fail(f"input {i} is missing")
        v = self._get(i)
        if isinstance(v, Const):
            raise self.fail(f"input {i} ('{self.node.input[i]}') is a constant; numbacnn needs it to come "
                            f"from the data")
        if v.pads is not None and not pads_ok:
            raise self.fail(f"it reads the output of Pad node '{v.pads[3]}'; numbacnn folds a Pad only into the "
                            f"Conv, AveragePool or MaxPool that reads it")
        if exact and v.shape != v.onnx_shape:
            raise self.fail(f"input {i} has per-sample shape {v.onnx_shape} in ONNX, which numbacnn holds "
                            f"flattened as {v.shape} (after a global pooling or reduction), and a "
                            f"{self.op_type} needs the ONNX layout; numbacnn has no layer to reshape it back")
        return v

    def readers(self, i: int = 0) -> int:
        """How many nodes (and graph outputs) read output ``i`` of this node."""
        return self._imp.readers.get(self.node.output[i], 0)

    def producer(self, v: Value) -> Any:
        """The record (layer, config, params) of the numbacnn node giving ``v``; None for an input."""
        return self._imp.by_name.get(v.node)

    def readers_of(self, i: int) -> int:
        """How many nodes (and graph outputs) read input ``i``'s value."""
        return self._imp.readers.get(self.node.input[i], 0)

    # writing -------------------------------------------------------------------------------
    def layer(self, layer: str, inputs: Sequence[Value], *, params: dict[str, Any] | None = None,
              buffers: dict[str, Any] | None = None, output: int = 0, onnx_shape: tuple[int, ...] | None = None,
              **config: Any) -> Value:
        """Add a numbacnn layer reading ``inputs``; its value becomes output ``output`` of the
        ONNX node (a layer added only as a step towards it: ``output=None``)."""
        try:
            registry.get_layer(layer)
        except registry.UnknownLayerError:
            raise self.fail(f"it maps to numbacnn layer '{layer}', which this installation does not have "
                            f"(numbacnn layers lists what it has)") from None
        self._layers += 1
        name = self._imp.unique(self.name if self._layers == 1 else f"{self.name}.{layer}")
        try:
            obj = make_layer(layer, name, config)
            shape = tuple(int(s) for s in obj.output_shape(*[v.shape for v in inputs]))
        except (GraphError, ShapeError, TypeError, ValueError) as e:
            raise self.fail(f"as numbacnn layer {layer}: {e}") from None
        rec = Record(name, layer, dict(config), [v.node for v in inputs],
                      {k: np.asarray(a) for k, a in (params or {}).items()},
                      {k: np.asarray(a) for k, a in (buffers or {}).items()}, self.onnx_name)
        self._imp.records.append(rec)
        self._imp.by_name[name] = rec
        value = Value(name, shape, onnx_shape or shape)
        if output is not None:
            self.alias(value, output)
        return value

    def alias(self, value: Value | Const, output: int = 0) -> None:
        """Output ``output`` of the ONNX node is ``value`` (Identity, Dropout in inference, a
        Flatten of what numbacnn already holds flat)."""
        self._imp.values[self.node.output[output]] = value

    def pad(self, value: Value, pads: tuple[tuple[int, ...], tuple[int, ...], float]) -> None:
        """Output 0 is ``value`` padded by ``pads`` = (begins, ends, fill) on its spatial axes, to
        be folded into the convolution or pooling that reads it."""
        self._imp.values[self.node.output[0]] = Value(value.node, value.shape, value.onnx_shape,
                                                      (*pads, self.onnx_name))
