"""localconv: a locally connected 2D layer, a convolution whose weights are not shared across
output positions (Taigman et al. 2014, DeepFace; Keras' LocallyConnected2D).

y[n, k, p, q] = bias[k, p, q] + sum over c, r, s of
                weight[p, q, k, c, r, s] * x[n, c, p * stride_h + r - pad_top, q * stride_w + s - pad_left]

with zeros outside the input. Output sizes follow conv2d: P = (H + pad_top + pad_bottom - R)
// stride_h + 1. The weight at output position (p, q) is a conv2d weight (K, C, R, S), so the
parameters depend on the input size, which is fixed when the model is built.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from numbacnn import Ctx, Layer, ShapeError

if TYPE_CHECKING:
    from numbacnn.onnx import ExportCtx, ImportCtx

Shape = tuple[int, ...]
Pair = tuple[int, int]


def _ints(value: Any, what: str, n: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(items) not in n or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        counts = "".join(f" or {k} ints" for k in n if k > 1)
        raise TypeError(f"{what} must be an int{counts}, found {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{what} must be at least {minimum}, found {value!r}")
    return items


class LocalConv(Layer):
    """Locally connected 2D layer. (C, H, W) -> (K, P, Q); weight (P, Q, K, C, R, S), bias (K, P, Q)."""

    name = "localconv"
    onnx_ops = (("ai.numbacnn", "LocalConv"),)

    def __init__(self, out_channels: int, kernel_size: int | Pair, stride: int | Pair = 1,
                 padding: int | Pair | tuple[int, int, int, int] | str = 0, bias: bool = True) -> None:
        (self.out_channels,) = _ints(out_channels, "out_channels", (1,), 1)
        self.kernel = _pair(_ints(kernel_size, "kernel_size", (1, 2), 1))
        self.stride = _pair(_ints(stride, "stride", (1, 2), 1))
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, found {bias!r}")
        self.bias = bias
        if padding == "valid":
            self.pads = (0, 0, 0, 0)
        elif padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, found stride {stride!r}")
            (R, S) = self.kernel
            self.pads = ((R - 1) // 2, R - 1 - (R - 1) // 2, (S - 1) // 2, S - 1 - (S - 1) // 2)
        elif isinstance(padding, str):
            raise ValueError(f"padding must be 'same', 'valid', an int, a pair or (top, bottom, left, right), "
                             f"found {padding!r}")
        else:
            p = _ints(padding, "padding", (1, 2, 4), 0)
            self.pads = (p[0],) * 4 if len(p) == 1 else (p[0], p[0], p[1], p[1]) if len(p) == 2 else p

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """What ``numbacnn layers --check localconv`` runs the conformance kit on."""
        return [
            {"config": {"out_channels": 3, "kernel_size": 3, "padding": 1}, "input_shapes": [(2, 2, 5, 5)],
             "bad_shapes": [([(2, 10)], "expected an input of shape (C, H, W)")]},
            {"config": {"out_channels": 2, "kernel_size": [2, 3], "stride": 2, "bias": False},
             "input_shapes": [(2, 3, 6, 7)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        _, H, W = x_shape
        (R, S), (top, bottom, left, right) = self.kernel, self.pads
        if H + top + bottom < R or W + left + right < S:
            padded = f" (padded to {H + top + bottom}x{W + left + right})" if any(self.pads) else ""
            raise ShapeError(f"input {H}x{W}{padded} is smaller than the {R}x{S} kernel: expected at least "
                             f"{max(R - top - bottom, 1)}x{max(S - left - right, 1)}, found {H}x{W}")
        P = (H + top + bottom - R) // self.stride[0] + 1
        Q = (W + left + right - S) // self.stride[1] + 1
        return (self.out_channels, P, Q)

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        # conv2d's default (PyTorch's): uniform in +-1/sqrt(fan_in), per output position.
        C = input_shapes[0][0]
        K, P, Q = self.output_shape(input_shapes[0])
        R, S = self.kernel
        bound = 1.0 / math.sqrt(C * R * S)
        params = {"weight": rng.uniform(-bound, bound, (P, Q, K, C, R, S)).astype(np.float32)}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, (K, P, Q)).astype(np.float32)
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C = input_shapes[0][0]
        return 2 * math.prod(output_shape) * C * self.kernel[0] * self.kernel[1]

    def _geometry(self) -> tuple[int, int, int, int]:
        return (self.stride[0], self.stride[1], self.pads[0], self.pads[2])

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0, 0, 0))

    def forward(self, ctx: Ctx, x: Any) -> Any:
        w = ctx.params["weight"]
        y = ctx.empty((x.shape[0], self.out_channels, w.shape[0], w.shape[1]))
        ctx.kernels.localconv_forward(x, w, self._bias(ctx, ctx.params), y, *self._geometry())
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        w = ctx.params["weight"]
        ctx.kernels.localconv_backward_weight(x, gy, ctx.grads["weight"], self._bias(ctx, ctx.grads),
                                              *self._geometry())
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty(x.shape)
        ctx.kernels.localconv_backward_input(gy, w, gx, *self._geometry())
        return gx

    # ONNX: the function ai.numbacnn.LocalConv(X, W, B; strides, pads, bias) of standard
    # operators: a Conv with a one-hot kernel gathers every window's C*R*S taps into channels
    # (an im2col), and an Einsum applies each position's own weights. pads are ONNX's
    # [top, left, bottom, right]; bias=0 marks a layer without one (B is zeros then).
    def onnx_export(self, ctx: ExportCtx) -> None:
        h = ctx.helper

        def ints(name: str, values: list[int]) -> Any:
            return h.make_node("Constant", [], [name], value=h.make_tensor(name, 7, [len(values)], values))

        conv = h.make_node("Conv", ["X", "E"], ["cols"])
        for attr in ("strides", "pads"):
            ref = h.make_attribute_ref(attr, 7)  # AttributeProto.INTS
            conv.attribute.append(ref)
        body = [
            ints("c0", [0]), ints("c3", [3]), ints("c6", [6]),
            h.make_node("Shape", ["W"], ["sw"]),
            h.make_node("Slice", ["sw", "c3", "c6"], ["crs"]),
            h.make_node("ReduceProd", ["crs"], ["n"], keepdims=1),
            h.make_node("Concat", ["n", "n"], ["square"], axis=0),
            h.make_node("ConstantOfShape", ["square"], ["zeros"]),
            h.make_node("EyeLike", ["zeros"], ["eye"]),
            h.make_node("Concat", ["n", "crs"], ["eshape"], axis=0),
            h.make_node("Reshape", ["eye", "eshape"], ["e1"]),
            h.make_node("Cast", ["e1"], ["E"], to=ctx.elem_type),
            conv,
            h.make_node("Slice", ["sw", "c0", "c3"], ["pqk"]),
            h.make_node("Concat", ["pqk", "n"], ["wshape"], axis=0),
            h.make_node("Reshape", ["W", "wshape"], ["wr"]),
            h.make_node("Einsum", ["cols", "wr"], ["y"], equation="njpq,pqkj->nkpq"),
            h.make_node("Add", ["y", "B"], ["Y"]),
        ]
        ctx.function(h.make_function("ai.numbacnn", "LocalConv", ["X", "W", "B"], ["Y"], body,
                                     [h.make_opsetid("", ctx.opset)], attributes=["strides", "pads", "bias"]))
        P, Q, K = ctx.output_shape[1], ctx.output_shape[2], self.out_channels
        b = ctx.param("bias") if self.bias else ctx.constant(np.zeros((K, P, Q)), "no_bias")
        top, bottom, left, right = self.pads
        ctx.add("LocalConv", [ctx.inputs[0], ctx.param("weight"), b], domain="ai.numbacnn", last=True,
                strides=list(self.stride), pads=[top, left, bottom, right], bias=int(self.bias))

    @classmethod
    def onnx_import(cls, ctx: ImportCtx) -> None:
        ctx.expect_attrs(["bias", "pads", "strides"])
        x = ctx.value(0)
        w = ctx.const(1, what="W")
        if w.ndim != 6:
            raise ctx.fail(f"W has shape {w.shape}; localconv's weight is (P, Q, K, C, R, S)")
        top, left, bottom, right = ctx.attr("pads", [0, 0, 0, 0])
        bias = bool(ctx.attr("bias", 1))
        params = {"weight": w, "bias": ctx.const(2, what="B")} if bias else {"weight": w}
        ctx.layer("localconv", [x], params=params, out_channels=int(w.shape[2]), kernel_size=tuple(w.shape[4:]),
                  stride=tuple(ctx.attr("strides", [1, 1])), padding=(top, bottom, left, right), bias=bias)


def _pair(items: tuple[int, ...]) -> Pair:
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])
