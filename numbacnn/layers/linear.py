"""linear: y = x @ weight.T + bias on flat (N, in_features) inputs, as torch.nn.Linear."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError


class Linear(Layer):
    """Fully connected layer, y = x W^T + b. (in_features,) -> (out_features,).

    in_features is the input's size; weight is (out_features, in_features), bias (out_features,).
    """

    name = "linear"
    #: Set on inference's copy when the relu after it is fused in (numbacnn._fold).
    fused_relu = False

    def __init__(self, out_features: int, bias: bool = True) -> None:
        if isinstance(out_features, bool) or not isinstance(out_features, int):
            raise TypeError(f"out_features must be an int, found {out_features!r}")
        if out_features <= 0:
            raise ValueError(f"out_features must be positive, found {out_features}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, found {bias!r}")
        self.out_features = out_features
        self.bias = bias

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check linear`` (and ``numbacnn warmup``)."""
        return [{"config": {"out_features": 3}, "input_shapes": [(2, 4)],
                 "bad_shapes": [([(2, 3, 4, 4)], "put flatten before it")]},
                {"config": {"out_features": 2, "bias": False}, "input_shapes": [(3, 5)]}]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 1:
            raise ShapeError(f"linear expects a flat input (features,), found {x_shape}; put flatten before it")
        return (self.out_features,)

    def init_params(self, input_shapes: Sequence[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (in_features,) = input_shapes[0]
        # torch.nn.Linear's default: U(-1/sqrt(in_features), 1/sqrt(in_features)) for both.
        bound = 1.0 / math.sqrt(in_features)
        params = {"weight": rng.uniform(-bound, bound, (self.out_features, in_features)).astype(np.float32)}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(np.float32)
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        (in_features,) = input_shapes[0]
        return 2 * in_features * self.out_features + (self.out_features if self.bias else 0)

    # Written once for both devices: ctx.kernels is linear_cpu or linear_cuda.
    def forward(self, ctx: Ctx, x: Any) -> Any:
        w = ctx.params["weight"]
        y = ctx.empty((x.shape[0], self.out_features))
        scratch = ctx.scratch(self._scratch(ctx, x, w)[0])
        # fused_relu: inference's linear + relu (numbacnn._fold)
        ctx._repeatable(ctx.kernels.linear_forward, x, w, self._bias(ctx, ctx.params), y, scratch, self.fused_relu)
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        w = ctx.params["weight"]
        part = ctx.scratch(self._scratch(ctx, x, w)[1])
        gx = ctx.empty_like(x) if ctx.needs_input_grad[0] else None
        ctx.kernels.linear_backward(x, w, gy, ctx.grads["weight"], self._bias(ctx, ctx.grads), part, gx)
        return gx

    def _scratch(self, ctx: Ctx, x: Any, w: Any) -> Any:
        # The kernels' scratch shapes for this batch size: a plan, asked once per signature.
        return ctx.plan(x.shape[0], lambda: ctx.kernels.linear_scratch(x.shape[0], *w.shape))

    def _bias(self, ctx: Ctx, arrays: dict[str, Any]) -> Any:
        # Kernels take an empty array for "no bias", so one compiled version serves both.
        return arrays["bias"] if self.bias else ctx.empty((0,))
