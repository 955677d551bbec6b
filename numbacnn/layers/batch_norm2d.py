"""batch_norm2d: per-channel normalisation, as torch.nn.BatchNorm2d computes it.

y = (x - mean) / sqrt(var + eps) * weight + bias, per channel over (N, H, W). Training uses
the batch's mean and biased variance and moves the running statistics towards the batch's
(the unbiased variance, as PyTorch does): running = (1 - momentum) * running + momentum * batch,
or with ``momentum=None`` the cumulative average of every batch so far (momentum 1/t at the
t-th, counted in the buffer ``num_batches_tracked``). Evaluation uses the running statistics;
without ``track_running_stats`` both use the batch's.

batch_norm1d and batch_norm3d are this layer on other ranks: the kernels see every input as
(N, C, L), L the product of the dimensions after the channels.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, found {value!r}")
    return float(value)


class BatchNorm2d(Layer):
    """Batch normalisation over (N, H, W) per channel. (C, H, W) -> (C, H, W);
    weight, bias (C,); buffers running_mean, running_var (C,)."""

    name = "batch_norm2d"
    #: Set on the executor's copy of a batch norm whose output only a relu reads
    #: (numbacnn._fuse_train): the forward applies that relu as it writes y. The model's own
    #: layer never has it.
    fused_relu = False

    def __init__(self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        self.eps = _number(eps, "eps")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, found {eps!r}")
        self.momentum = None if momentum is None else _number(momentum, "momentum")
        if self.momentum is not None and not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None (a cumulative average), found {momentum!r}")
        for what, flag in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(flag, bool):
                raise TypeError(f"{what} must be True or False, found {flag!r}")
        self.affine = affine
        self.track_running_stats = track_running_stats

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check batch_norm2d``."""
        return [
            {"config": {}, "input_shapes": [(3, 4, 3, 3)], "training": True,
             "bad_shapes": [([(2, 3, 4)], "expected an input of shape (C, H, W)")]},
            {"config": {}, "input_shapes": [(2, 3, 4, 4)]},
            {"config": {"affine": False, "momentum": 0.3}, "input_shapes": [(2, 3, 2, 2)], "training": True},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        return x_shape

    def init_params(self, input_shapes: Sequence[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        if not self.affine:
            return {}
        C = input_shapes[0][0]
        return {"weight": np.ones(C, np.float32), "bias": np.zeros(C, np.float32)}

    def init_buffers(self, input_shapes: Sequence[Shape]) -> dict[str, np.ndarray]:
        if not self.track_running_stats:
            return {}
        C = input_shapes[0][0]
        buffers = {"running_mean": np.zeros(C, np.float32), "running_var": np.ones(C, np.float32)}
        if self.momentum is None:
            # A float of the model's dtype, like every buffer: exact up to 2**24 batches in float32.
            buffers["num_batches_tracked"] = np.zeros(1, np.float32)
        return buffers

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return 4 * math.prod(output_shape)

    def _plan(self, x_shape: Shape, dtype: Any) -> tuple[Any, float]:
        # Asked once per input signature (ctx.plan): eps typed like the data (a Python float
        # would make the CUDA kernels compute in float64), and the running variance's
        # unbiasing factor M / (M - 1) over the M values per channel.
        M = x_shape[0] * math.prod(x_shape[2:])
        return dtype.type(self.eps), M / max(M - 1, 1)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        kernels = ctx.kernels
        N, C = x.shape[0], x.shape[1]
        L = math.prod(x.shape[2:])
        M = N * L
        eps, unbias = ctx.plan(x.shape, lambda: self._plan(x.shape, x.dtype))
        x3 = x.reshape(N, C, L)
        y = ctx.empty_like(x)
        batch_stats = ctx.training or not self.track_running_stats
        if batch_stats:
            if M == 1:
                raise ValueError(f"{self.name} node '{ctx.name}': expected more than 1 value per channel "
                                 f"for batch statistics, found input {tuple(x.shape)}; use a larger batch")
            mean, var = ctx.empty((C,)), ctx.empty((C,))
            kernels.batch_norm2d_stats(x3, mean, var, y.reshape(N, C, L))  # y: scratch until written
            if ctx.training and self.track_running_stats:
                running = ctx.buffers["running_mean"], ctx.buffers["running_var"]
                if self.momentum is None:
                    # The count stays on the node's device: reading it back would synchronise.
                    kernels.batch_norm2d_update_cumulative(mean, var, x.dtype.type(unbias),
                                                           ctx.buffers["num_batches_tracked"], *running)
                else:
                    kernels.batch_norm2d_update_running(mean, var, self.momentum, unbias, *running)
        else:
            mean, var = ctx.buffers["running_mean"], ctx.buffers["running_var"]
        w, b = self._affine(ctx, ctx.params)
        kernels.batch_norm2d_forward(x3, mean, var, w, b, eps, self.fused_relu, y.reshape(N, C, L))
        ctx.save(x3, mean, var, batch_stats)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        kernels = ctx.kernels
        x3, mean, var, batch_stats = ctx.saved
        N, C, L = x3.shape
        want_gx = ctx.needs_input_grad[0]
        gy3 = gy.reshape(N, C, L)
        eps = ctx.plan(gy.shape, lambda: self._plan(gy.shape, gy.dtype))[0]
        # sums[0] = sum(gy), sums[1] = sum(gy * x_hat) per channel: the weight gradients, and
        # what the input gradient subtracts when the statistics came from the batch.
        sums = ctx.empty((2, C))
        gw, gb = self._affine(ctx, ctx.grads)
        if self.affine or (want_gx and batch_stats):
            kernels.batch_norm2d_backward_weight(x3, gy3, mean, var, eps, sums, gw, gb)
        if not want_gx:
            return None
        gx = ctx.empty(gy.shape)
        w = ctx.params["weight"] if self.affine else gw
        kernels.batch_norm2d_backward_input(x3, gy3, mean, var, w, eps, sums, batch_stats, gx.reshape(N, C, L))
        return gx

    def _affine(self, ctx: Ctx, arrays: dict[str, Any]) -> tuple[Any, Any]:
        # Kernels take empty arrays for "no affine parameters": one compiled version serves both.
        if self.affine:
            return arrays["weight"], arrays["bias"]
        none = ctx.empty((0,))
        return none, none
