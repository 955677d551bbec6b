"""Elementwise activations and softmax both ways; Clip is relu, relu6 or hardtanh (infinite or
omitted bounds included) by its bounds."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._table import exports, imports

# layer name <-> ONNX operator, for activations with no hyper-parameters
PLAIN = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
# layer name <-> (ONNX operator, layer config key, ONNX attribute, ONNX default)
WITH_ALPHA = {"leaky_relu": ("LeakyRelu", "negative_slope", 0.01), "elu": ("Elu", "alpha", 1.0)}


def _elementwise(ctx: Any, layer: str, **config: Any) -> None:
    x = ctx.value(0, exact=False)
    ctx.layer(layer, [x], onnx_shape=x.onnx_shape, **config)


@exports(*PLAIN)
def plain_out(ctx: Any) -> None:
    ctx.add(PLAIN[ctx.layer.name], ctx.inputs, last=True)


def _plain_in(layer: str) -> Any:
    def importer(ctx: Any) -> None:
        ctx.expect_attrs([])
        _elementwise(ctx, layer)

    return importer


for _layer, _op in PLAIN.items():
    imports(_op)(_plain_in(_layer))


@exports(*WITH_ALPHA)
def alpha_out(ctx: Any) -> None:
    op, key, default = WITH_ALPHA[ctx.layer.name]
    ctx.add(op, ctx.inputs, last=True, alpha=float(ctx.config.get(key, default)))


def _alpha_in(layer: str) -> Any:
    op, key, default = WITH_ALPHA[layer]

    def importer(ctx: Any) -> None:
        ctx.expect_attrs(["alpha"])
        _elementwise(ctx, layer, **{key: float(ctx.attr("alpha", default))})

    return importer


for _layer in WITH_ALPHA:
    imports(WITH_ALPHA[_layer][0])(_alpha_in(_layer))


@exports("gelu")
def gelu_out(ctx: Any) -> None:
    if ctx.opset < 20:
        raise ctx.fail(f"Gelu is an ONNX operator from opset 20; export with opset=20 or newer (asked: {ctx.opset})")
    ctx.add("Gelu", ctx.inputs, last=True, approximate=str(ctx.config.get("approximate", "none")))


@imports("Gelu")
def gelu_in(ctx: Any) -> None:
    ctx.expect_attrs(["approximate"])
    _elementwise(ctx, "gelu", approximate=ctx.attr("approximate", "none"))


@exports("hardtanh", "relu6")
def clip_out(ctx: Any) -> None:
    lo, hi = (0.0, 6.0) if ctx.layer.name == "relu6" else (float(ctx.config.get("min_val", -1.0)),
                                                            float(ctx.config.get("max_val", 1.0)))
    ctx.add("Clip", [ctx.inputs[0], ctx.constant(np.array(lo), "min"), ctx.constant(np.array(hi), "max")], last=True)


@imports("Clip")
def clip_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    lo = ctx.const(1, what="min")
    hi = ctx.const(2, what="max")
    lo = -np.inf if lo is None else float(np.ravel(lo)[0])  # an omitted bound does not clip
    hi = np.inf if hi is None else float(np.ravel(hi)[0])
    if lo == 0.0 and hi == np.inf:
        _elementwise(ctx, "relu")
    elif (lo, hi) == (0.0, 6.0):
        _elementwise(ctx, "relu6")
    elif lo <= hi:
        _elementwise(ctx, "hardtanh", min_val=lo, max_val=hi)
    else:
        raise ctx.fail(f"Clip to [{lo}, {hi}]; numbacnn's hardtanh needs min <= max (ONNX then gives max everywhere)")


@exports("softmax", "log_softmax")
def softmax_out(ctx: Any) -> None:
    op = "Softmax" if ctx.layer.name == "softmax" else "LogSoftmax"
    dim = int(ctx.config.get("dim", 1))
    if ctx.opset < 13 and dim % (len(ctx.input_shapes[0]) + 1) != len(ctx.input_shapes[0]):
        raise ctx.fail("before opset 13 ONNX's Softmax flattens the trailing axes; export with opset 13 or newer")
    ctx.add(op, ctx.inputs, last=True, axis=dim)


@imports("Softmax", "LogSoftmax")
def softmax_in(ctx: Any) -> None:
    ctx.expect_attrs(["axis"])
    probe = ctx.value(0, exact=False)
    rank = len(probe.onnx_shape) + 1
    axis = int(ctx.attr("axis", -1)) % rank
    x = ctx.value(0, exact=axis != 1 or len(probe.shape) != 1)
    ctx.layer("softmax" if ctx.op_type == "Softmax" else "log_softmax", [x], onnx_shape=x.onnx_shape,
              dim=axis if len(x.shape) + 1 == rank else 1)
