"""swish: y = x * sigmoid(beta * x), elementwise, with a learnable beta (Ramachandran et al. 2017).

dy/dx = s * (1 + beta * x * (1 - s)) and dy/dbeta = x * x * s * (1 - s), where
s = sigmoid(beta * x). beta = 1 is SiLU; a large beta tends to ReLU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from numbacnn import Ctx, Layer

if TYPE_CHECKING:
    from numbacnn.onnx import ExportCtx, ImportCtx

Shape = tuple[int, ...]


class Swish(Layer):
    """Swish, y = x * sigmoid(beta * x), beta learnable of shape (1,). Any shape -> same shape."""

    name = "swish"
    onnx_ops = (("ai.numbacnn", "Swish"),)

    def __init__(self, beta: float = 1.0) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise TypeError(f"beta must be a number, found {beta!r}")
        if not math.isfinite(beta):
            raise ValueError(f"beta must be finite, found {beta!r}")
        self.beta = float(beta)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """What ``numbacnn layers --check swish`` runs the conformance kit on."""
        return [{"config": {"beta": 1.0}, "input_shapes": [(2, 3, 4, 5)]},
                {"config": {"beta": -0.5}, "input_shapes": [(3, 7)]}]

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"beta": np.full((1,), self.beta, np.float32)}

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return 4 * math.prod(output_shape)  # multiply, exp, add, divide

    # Written once for both devices: ctx.kernels is swish_cpu or swish_cuda, by the node's device.
    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty_like(x)
        ctx.kernels.swish_forward(x.reshape(x.size), ctx.params["beta"], y.reshape(y.size))
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        beta = ctx.params["beta"]
        ctx.kernels.swish_backward_weight(x.reshape(x.size), beta, gy.reshape(gy.size), ctx.grads["beta"])
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty_like(x)
        ctx.kernels.swish_backward_input(x.reshape(x.size), beta, gy.reshape(gy.size), gx.reshape(gx.size))
        return gx

    # ONNX: the function ai.numbacnn.Swish(X, beta) = X * Sigmoid(beta * X), so any runtime
    # runs it from its standard operators, and numbacnn reads it back as this layer.
    def onnx_export(self, ctx: ExportCtx) -> None:
        h = ctx.helper
        body = [h.make_node("Mul", ["beta", "X"], ["bx"]), h.make_node("Sigmoid", ["bx"], ["s"]),
                h.make_node("Mul", ["X", "s"], ["Y"])]
        ctx.function(h.make_function("ai.numbacnn", "Swish", ["X", "beta"], ["Y"], body,
                                     [h.make_opsetid("", ctx.opset)]))
        ctx.add("Swish", [ctx.inputs[0], ctx.param("beta")], domain="ai.numbacnn", last=True)

    @classmethod
    def onnx_import(cls, ctx: ImportCtx) -> None:
        ctx.expect_attrs([])
        x = ctx.value(0, exact=False)
        beta = np.asarray(ctx.const(1, what="beta"), np.float64).reshape(-1)
        if beta.size != 1:
            raise ctx.fail(f"beta has {beta.size} values; swish's beta is one number")
        ctx.layer("swish", [x], params={"beta": beta}, onnx_shape=x.onnx_shape, beta=float(beta[0]))
