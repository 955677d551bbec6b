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

    def __init__(self, out_features: int, bias: bool = True) -> None:
        if isinstance(out_features, bool) or not isinstance(out_features, int):
            raise TypeError(f"out_features must be an int, found {out_features!r}")
        if out_features <= 0:
            raise ValueError(f"out_features must be positive, found {out_features}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, found {bias!r}")
        self.out_features = out_features
        self.bias = bias

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

    # Parameter gradients accumulate, so every product is written as an accumulation: the
    # forward starts y from the bias (or zeros) and adds x @ W^T onto it.
    def forward_cpu(self, ctx: Ctx, x: Any) -> Any:
        from .linear_cpu import linear_fill_bias, linear_products

        shape = (x.shape[0], self.out_features)
        if self.bias:
            y = ctx.empty(shape)
            linear_fill_bias(y, ctx.params["bias"])
        else:
            y = ctx.zeros(shape)
        linear_products(x, ctx.params["weight"], y)
        ctx.save(x)
        return y

    def backward_cpu(self, ctx: Ctx, gy: Any) -> Any:
        from .linear_cpu import linear_backward_bias, linear_products, linear_transpose

        (x,) = ctx.saved
        w = ctx.params["weight"]
        gyt, xt = ctx.empty(gy.shape[::-1]), ctx.empty(x.shape[::-1])
        linear_transpose(gy, gyt)
        linear_transpose(x, xt)
        linear_products(gyt, xt, ctx.grads["weight"])  # gw += gy^T x
        if self.bias:
            linear_backward_bias(gyt, ctx.grads["bias"])
        if not ctx.needs_input_grad[0]:
            return None
        wt = ctx.empty(w.shape[::-1])
        linear_transpose(w, wt)
        gx = ctx.zeros(x.shape)
        linear_products(gy, wt, gx)  # gx = gy W
        return gx

    def forward_cuda(self, ctx: Ctx, x: Any) -> Any:
        from .linear_cuda import linear_forward

        y = ctx.empty((x.shape[0], self.out_features))
        linear_forward(x, ctx.params["weight"], ctx.params.get("bias"), y)
        ctx.save(x)
        return y

    def backward_cuda(self, ctx: Ctx, gy: Any) -> Any:
        from .linear_cuda import linear_backward_input, linear_backward_weight

        (x,) = ctx.saved
        w = ctx.params["weight"]
        linear_backward_weight(x, gy, ctx.grads["weight"], ctx.grads.get("bias"))
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty_like(x)
        linear_backward_input(gy, w, gx)
        return gx
