"""Batch norm and dropout both ways.

BatchNormalization's traps: ONNX's ``momentum`` is PyTorch's ``1 - momentum`` (the weight of
the running value, not of the batch's); ``training_mode`` (opset 14, with opset 15 loosening
the input types) turns the node into a training step whose running statistics are outputs,
which an inference graph never needs; import refuses it and export never writes it. A batch
norm without running statistics normalises by the batch's even in inference, which no
standard operator does: it is the function ``ai.numbacnn.BatchNormBatchStats``, whose body of
standard operators any runtime can run.

Dropout's ratio is an input (since opset 12), not an attribute.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import DOMAIN
from ._table import exports, imports

BATCH_NORMS = {1: "batch_norm1d", 2: "batch_norm1d", 3: "batch_norm2d", 4: "batch_norm3d"}  # by input rank - 1


def _batch_stats_function(ctx: Any) -> Any:
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B, statistics over every axis but 1."""
    h = ctx.helper
    reduce = ({"axes": [0, 2]}, []) if ctx.opset < 18 else ({}, ["axes"])
    nodes = [
        h.make_node("Constant", [], ["flat"], value=h.make_tensor("flat", 7, [3], [0, 0, -1])),
        h.make_node("Constant", [], ["col"], value=h.make_tensor("col", 7, [3], [1, -1, 1])),
        h.make_node("Constant", [], ["axes"], value=h.make_tensor("axes", 7, [2], [0, 2])),
        h.make_node("Shape", ["X"], ["shape"]),
        h.make_node("Reshape", ["X", "flat"], ["x3"]),
        h.make_node("ReduceMean", ["x3", *reduce[1]], ["mean"], keepdims=1, **reduce[0]),
        h.make_node("Sub", ["x3", "mean"], ["d"]),
        h.make_node("Mul", ["d", "d"], ["d2"]),
        h.make_node("ReduceMean", ["d2", *reduce[1]], ["var"], keepdims=1, **reduce[0]),
        h.make_node("Constant", [], ["eps"]),
        h.make_node("Cast", ["eps"], ["eps_t"], to=ctx.elem_type),  # CastLike is opset 15+
        h.make_node("Add", ["var", "eps_t"], ["ve"]),
        h.make_node("Sqrt", ["ve"], ["std"]),
        h.make_node("Div", ["d", "std"], ["n3"]),
        h.make_node("Reshape", ["scale", "col"], ["s3"]),
        h.make_node("Reshape", ["B", "col"], ["b3"]),
        h.make_node("Mul", ["n3", "s3"], ["m3"]),
        h.make_node("Add", ["m3", "b3"], ["y3"]),
        h.make_node("Reshape", ["y3", "shape"], ["Y"]),
    ]
    nodes[9].attribute.append(ctx.onnx.AttributeProto(name="value_float", type=ctx.onnx.AttributeProto.FLOAT,
                                                      ref_attr_name="epsilon"))  # the node's epsilon
    return h.make_function(DOMAIN, "BatchNormBatchStats", ["X", "scale", "B"], ["Y"], nodes,
                           [h.make_opsetid("", ctx.opset)], attributes=["epsilon"])


@exports("batch_norm1d", "batch_norm2d", "batch_norm3d")
def batch_norm_out(ctx: Any) -> None:
    c = ctx.config
    C = ctx.input_shapes[0][0]
    if c.get("affine", True):
        scale, bias = ctx.param("weight"), ctx.param("bias")
    else:
        scale, bias = ctx.constant(np.ones(C), "ones"), ctx.constant(np.zeros(C), "zeros")
    eps = float(c.get("eps", 1e-5))
    if not c.get("track_running_stats", True):
        ctx.function(_batch_stats_function(ctx))
        ctx.add("BatchNormBatchStats", [ctx.inputs[0], scale, bias], last=True, domain=DOMAIN, epsilon=eps)
        return
    # momentum None (a cumulative average) has no ONNX form; inference never reads it, so it
    # is left out (ONNX's default 0.9 comes back as momentum 0.1)
    momentum = c.get("momentum", 0.1)
    ctx.add("BatchNormalization", [ctx.inputs[0], scale, bias, ctx.param("running_mean"), ctx.param("running_var")],
            last=True, epsilon=eps, momentum=None if momentum is None else 1.0 - float(momentum))


def _batch_norm(ctx: Any, x: Any, track: bool, **arrays: Any) -> None:
    rank = len(x.onnx_shape) + 1
    if rank - 1 not in BATCH_NORMS:
        raise ctx.fail(f"a batch norm of a {rank}-D input; numbacnn's take 2-D to 5-D (N, C, ...)")
    C = x.onnx_shape[0]
    params = {k: np.broadcast_to(arrays[k], (C,)).copy() for k in ("weight", "bias")}
    buffers = {k: np.broadcast_to(v, (C,)).copy() for k, v in arrays.items() if k.startswith("running")}
    config = {"eps": float(ctx.attr("epsilon", 1e-5)), "affine": True, "track_running_stats": track}
    if track:
        config["momentum"] = min(max(1.0 - float(ctx.attr("momentum", 0.9)), 0.0), 1.0)
    ctx.layer(BATCH_NORMS[rank - 1], [x], params=params, buffers=buffers, **config)


@imports("BatchNormalization")
def batch_norm_in(ctx: Any) -> None:
    ctx.expect_attrs(["epsilon", "momentum", "training_mode"])
    if ctx.attr("training_mode", 0):
        raise ctx.fail("training_mode=1: the graph was exported in training mode (running statistics as "
                       "outputs); export the network in evaluation mode (model.eval(), or torch.onnx.export("
                       "..., training=torch.onnx.TrainingMode.EVAL))")
    x = ctx.value(0)
    _batch_norm(ctx, x, True, weight=ctx.const(1, what="scale"), bias=ctx.const(2, what="B"),
                running_mean=ctx.const(3, what="input_mean"), running_var=ctx.const(4, what="input_var"))


@imports("BatchNormBatchStats", domain=DOMAIN)
def batch_stats_in(ctx: Any) -> None:
    ctx.expect_attrs(["epsilon"])
    _batch_norm(ctx, ctx.value(0), False, weight=ctx.const(1, what="scale"), bias=ctx.const(2, what="B"))


@exports("dropout")
def dropout_out(ctx: Any) -> None:
    ratio = ctx.constant(np.array(ctx.config.get("p", 0.5), np.float32), "ratio", dtype=np.float32)
    ctx.add("Dropout", [ctx.inputs[0], ratio], last=True)


@imports("Dropout")
def dropout_in(ctx: Any) -> None:
    ctx.expect_attrs(["seed"])
    x = ctx.value(0, exact=False)
    ratio = float(np.ravel(ctx.const(1, default=np.array(0.5), what="ratio"))[0])
    if ratio == 0.0:
        ctx.alias(x)
        return
    ctx.layer("dropout", [x], onnx_shape=x.onnx_shape, p=ratio)
