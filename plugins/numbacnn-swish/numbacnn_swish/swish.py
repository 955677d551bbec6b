"""swish: y = x * sigmoid(beta * x), elementwise, with a learnable beta (Ramachandran et al. 2017).

dy/dx = s * (1 + beta * x * (1 - s)) and dy/dbeta = x * x * s * (1 - s), where
s = sigmoid(beta * x). beta = 1 is SiLU; a large beta tends to ReLU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from numbacnn import Ctx, Layer

Shape = tuple[int, ...]


class Swish(Layer):
    """Swish, y = x * sigmoid(beta * x), beta learnable of shape (1,). Any shape -> same shape."""

    name = "swish"

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
