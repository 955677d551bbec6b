"""``load``: an ONNX model as a numbacnn Graph and Model, one importer per ONNX node.

Nodes are visited in the file's (topological) order. A node whose inputs are all constant
is folded (``_fold``); any other goes to the importer of its (domain, op_type), which reads
its attributes and constant inputs through an ``ImportCtx`` and adds numbacnn layers (or
passes a value through). Every error names the file, the ONNX node and its operator.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..graph import Graph, GraphError
from ._base import DOMAIN, MIN_IMPORT_OPSET, OnnxError, UnsupportedOperatorError
from .._shapes import PROBES, is_free
from ..layer import ShapeError
from ._fuse import fuse_patterns
from ._fold import SENTINELS, Const, fold_node, foldable, shape_of
from ._import_ctx import ImportCtx, Value, LoadState, sanitise
from ._import_free import FIX_SIZES, same_at_every_size
from ._table import op_label

__all__ = ["load_model"]

FLOAT_TYPES = {1: np.float32, 11: np.float64}  # TensorProto.FLOAT, DOUBLE


def _read(path: str) -> Any:
    import onnx

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        proto = onnx.load(path)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxError(f"{path}: not a readable ONNX model ({type(e).__name__}: {first})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxError(f"{path}: not a valid ONNX model: {first}") from None
    return proto


def _inline_unknown_functions(proto: Any, imp: LoadState) -> Any:
    """Model-local functions with no importer (another exporter's composites) are expanded
    into their bodies. numbacnn's own (domain ai.numbacnn) stay whole: they become layers, and
    one whose plugin is missing is better named than met as its pieces."""
    known = set(imp.builtin) | set(imp.plugins())
    unknown = [(f.domain, f.name) for f in proto.functions if (f.domain, f.name) not in known and f.domain != DOMAIN]
    if not unknown:
        return proto
    import onnx.inliner

    return onnx.inliner.inline_selected_functions(proto, unknown)


def _declared_shape(path: str, vi: Any, override: Any) -> tuple[int | None, ...]:
    """An input's per-sample shape: ``override`` if given, else the file's; None where free
    (a dim_param or an unknown size). Only the sizes after the channels may be free."""
    dims = vi.type.tensor_type.shape.dim
    shown = ", ".join(d.dim_param or "?" if not d.HasField("dim_value") else str(d.dim_value) for d in dims)
    if override is not None:
        shape = tuple(None if d is None else int(d) for d in override)
        if len(shape) != len(dims) - 1:
            raise OnnxError(f"{path}: input_shape {shape} for input '{vi.name}' has {len(shape)} sizes; the "
                            f"file's input has {len(dims) - 1} per-sample sizes ({shown})")
    else:
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    if not dims or not shape or shape[0] is None:
        raise OnnxError(f"{path}: input '{vi.name}' has a free channel count ({shown}); numbacnn lets only the "
                        f"sizes after the channels be free: give them with nc.onnx.load(path, input_shape=(C, H, W)) "
                        f"(a dict by input name for several inputs)")
    return shape


def _declared_inputs(path: str, proto: Any, dtype: Any, input_shape: Any) -> list[tuple[str, tuple[int | None, ...]]]:
    """(ONNX name, per-sample shape with None where free) of each data input."""
    import onnx

    initializers = {t.name for t in proto.graph.initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in initializers:
            continue
        elem = vi.type.tensor_type.elem_type
        if FLOAT_TYPES.get(elem) != np.dtype(dtype).type:
            raise OnnxError(f"{path}: input '{vi.name}' is {onnx.helper.tensor_dtype_to_np_dtype(elem).name} "
                            f"(the weights are {np.dtype(dtype).name}); numbacnn models take float32 or float64 "
                            f"data of their weights' type")
        override = input_shape.get(vi.name) if isinstance(input_shape, dict) else input_shape
        out.append((vi.name, _declared_shape(path, vi, override)))
    if not out:
        raise OnnxError(f"{path}: the graph has no data input (every input is an initializer)")
    return out


def _model_dtype(proto: Any) -> Any:
    kinds = {i.data_type for i in proto.graph.initializer if i.data_type in FLOAT_TYPES}
    if len(kinds) == 1:
        return FLOAT_TYPES[kinds.pop()]
    for vi in proto.graph.input:
        if vi.type.tensor_type.elem_type in FLOAT_TYPES:
            return FLOAT_TYPES[vi.type.tensor_type.elem_type]
    return np.float32


def _visit(imp: LoadState, node: Any) -> None:
    domain = node.domain if node.domain != "ai.onnx" else ""
    ins: list[Any] = []
    for name in node.input:
        ins.append(None if name == "" else imp.values.get(name))
    name = node.name or (node.output[0] if node.output else node.op_type)
    if domain == "" and node.op_type in ("Shape", "Size") and isinstance(ins[0], Value):
        # The one thing folded from the data: its sizes (the batch's as a sentinel, see _fold).
        v = ins[0]
        shape = v.onnx_shape if v.pads is None else (  # a Pad waiting to be folded still pads
            v.onnx_shape[0], *(s + b + e for s, b, e in zip(v.onnx_shape[1:], v.pads[0], v.pads[1])))
        if node.op_type == "Size":
            n = int(np.prod(shape))
            imp.values[node.output[0]] = Const(np.array(SENTINELS[0] * n), np.array(SENTINELS[1] * n), name)
        else:
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            imp.values[node.output[0]] = shape_of(shape, start, end)
        return
    key = (domain, node.op_type)
    entry = imp.builtin.get(key)
    plugin = None if entry is not None else imp.plugins().get(key)
    given = [c for c, n in zip(ins, node.input) if n != ""]
    if domain == "" and all(isinstance(c, Const) for c in given) and node.op_type not in ("Dropout",):
        why = foldable(node, ins)
        if why is None:
            try:
                folded = fold_node(node, ins, imp.opsets[""])
            except Exception as e:  # the reference implementation's own error, whatever it is
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise OnnxError(f"{imp.path}: ONNX node '{name}' ({node.op_type}): its inputs are constant, but "
                                f"evaluating it failed: {type(e).__name__}: {first}") from None
            for out, c in zip(node.output, folded):
                imp.values[out] = c
            return
        if entry is None:
            raise UnsupportedOperatorError(f"{imp.path}: ONNX node '{name}' ({node.op_type}): cannot fold it: {why}")
    for i, (c, n) in enumerate(zip(ins, node.input)):
        if n != "" and c is None:
            raise OnnxError(f"{imp.path}: ONNX node '{name}' ({op_label(key)}): input '{n}' is not produced by "
                            f"any earlier node, initializer or graph input (the graph is not in topological order)")
    ctx = ImportCtx(imp, node, sanitise(node.name) or sanitise(node.output[0] if node.output else "")
                    or node.op_type.lower())
    if entry is not None:
        entry(ctx)
    elif plugin is not None:
        plugin[1](ctx)
    else:
        plugin_hint = (f" It is a numbacnn plugin layer's operator: install the plugin that declares "
                       f"{op_label(key)} (numbacnn layers lists the installed ones)." if domain == DOMAIN else "")
        raise UnsupportedOperatorError(
            f"{imp.path}: ONNX node '{name}': operator {op_label(key)} (opset {imp.opsets.get(domain, '?')}) is "
            f"not supported.{plugin_hint} Supported: {imp.supported()}")
    for out in node.output:
        if out and out not in imp.values and imp.readers.get(out, 0):
            raise ctx.fail(f"its output '{out}' is read by other nodes, but numbacnn gives only its first output")


def _build(imp: LoadState, inputs: list[tuple[str, tuple[int | None, ...]]]) -> Any:
    from ..model import Model

    g = Graph()
    for name, shape in inputs:
        g.input(shape, name=name)
    for rec in imp.records:
        try:
            g.layer(rec.layer, *rec.inputs, name=rec.name, **rec.config)
        except GraphError as e:
            raise OnnxError(f"{imp.path}: ONNX node '{rec.onnx_node}': {e}") from None
    outs = []
    for vi in imp.proto.graph.output:
        v = imp.values.get(vi.name)
        if not isinstance(v, Value) or v.pads is not None or v.node not in imp.by_name:
            what = "a constant" if isinstance(v, Const) else "a graph input" if isinstance(v, Value) and v.pads is None \
                else "a Pad's output" if isinstance(v, Value) else "not computed"
            raise OnnxError(f"{imp.path}: graph output '{vi.name}' is {what}; numbacnn models output what a layer "
                            f"computes")
        outs.append(v.node)
    g.output(*outs)
    try:
        model = Model(g, seed=0, dtype=imp.dtype)
    except ShapeError as e:
        if imp.probe is None:
            raise
        # main's refusal of a size-dependent parameter (linear after flatten), naming the node
        rec = next((r for r in imp.records if f"node '{r.name}'" in str(e)), None)
        where = f"ONNX node '{rec.onnx_node}': " if rec is not None else ""
        raise OnnxError(f"{imp.path}: {where}{e}; or {FIX_SIZES}") from None
    for rec in imp.records:
        for table, given, kind in ((model.params, rec.params, "parameter"), (model.buffers, rec.buffers, "buffer")):
            want = {k.rpartition(".")[2] for k in table if k.rpartition(".")[0] == rec.name}
            if set(given) != want:
                raise OnnxError(f"{imp.path}: ONNX node '{rec.onnx_node}': the {rec.layer} layer expects "
                                f"{kind}s {sorted(want)}, the importer gave {sorted(given)} (a bug in its importer)")
            for key, value in given.items():
                live = table[f"{rec.name}.{key}"]
                if value.shape != live.shape:
                    raise OnnxError(f"{imp.path}: ONNX node '{rec.onnx_node}': {kind} '{key}' has shape "
                                    f"{value.shape}; the {rec.layer} layer expects {live.shape}")
                live[...] = value.astype(model.dtype)
    return model


def _run(path: str, proto: Any, dtype: Any, declared: list[tuple[str, tuple[int | None, ...]]],
         size: int | None) -> tuple[LoadState, list[tuple[str, tuple[int | None, ...]]]]:
    """One pass over the nodes with every free input size set to ``size`` (None: none free)."""
    import onnx

    imp = LoadState(path, proto, dtype, probe=size)
    for t in proto.graph.initializer:
        imp.values[t.name] = Const.of(onnx.numpy_helper.to_array(t), "initializer")
    inputs = []
    for onnx_name, shape in declared:
        concrete = tuple(size if d is None else d for d in shape)
        name = imp.unique(sanitise(onnx_name) or "input")
        imp.values[onnx_name] = Value(name, concrete, concrete)
        inputs.append((name, shape))
    for node in proto.graph.node:
        _visit(imp, node)
    return imp, inputs


def load_model(path: str | os.PathLike, input_shape: Any = None) -> Any:
    path = os.fspath(path)
    proto = _read(path)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_IMPORT_OPSET:
        raise OnnxError(f"{path}: opset {opset}; numbacnn reads opset {MIN_IMPORT_OPSET} and newer (convert it "
                        f"first: onnx.version_converter.convert_version(model, {MIN_IMPORT_OPSET}))")
    dtype = _model_dtype(proto)
    proto = fuse_patterns(_inline_unknown_functions(proto, LoadState(path, proto, dtype)))
    declared = _declared_inputs(path, proto, dtype, input_shape)
    if not any(is_free(shape) for _, shape in declared):
        return _build(*_run(path, proto, dtype, declared, None))
    # Free sizes: import at two probe sizes; layers whose configs agree serve every size (see
    # _import_free), and nc.Model infers the free shapes as for any graph.
    first: OnnxError | None = None
    for sizes in PROBES:
        try:
            runs = [_run(path, proto, dtype, declared, size) for size in sizes]
        except OnnxError as e:
            first = first or e
            continue
        same_at_every_size(runs[0][0], runs[1][0])
        return _build(*runs[0])
    assert first is not None
    raise type(first)(f"{first} (imported with the input's free sizes set to {PROBES[0][0]}; if this node needs "
                      f"fixed sizes, {FIX_SIZES})") from None
