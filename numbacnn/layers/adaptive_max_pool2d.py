"""adaptive_max_pool2d: the largest value of each of P x Q bins that split the plane, as
torch.nn.AdaptiveMaxPool2d computes it: any input size gives the same output size (the
layer to put before ``flatten`` and ``linear`` for free image sizes).

Bins are adaptive_avg_pool2d's: bin i of an axis of n inputs and P outputs spans
floor(i * n / P) .. ceil((i + 1) * n / P) (exclusive), so bins may overlap. As in PyTorch, the
gradient goes to the bin's first maximum, or its last NaN if it holds any, and a bin of -inf
alone picks its first element; forward records which.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layer import Ctx
from ._pool import AdaptivePool2d

_INDEX = np.dtype(np.int32)


class AdaptiveMaxPool2d(AdaptivePool2d):
    """Max pooling to a fixed output size. (C, H, W) -> (C, P, Q)."""

    name = "adaptive_max_pool2d"

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check adaptive_max_pool2d``."""
        return [
            {"config": {"output_size": (2, 3)}, "input_shapes": [(2, 3, 5, 7)],
             "bad_shapes": [([(2, 3, 5)], "expected an input of shape (C, H, W)")]},
            {"config": {"output_size": (None, 4)}, "input_shapes": [(1, 2, 3, 3)]},
        ]

    def forward(self, ctx: Ctx, x: Any) -> Any:
        out = (x.shape[0], *self.output_shape(tuple(x.shape[1:])))
        y = ctx.empty(out)
        # Each output keeps the flat in-plane index of its maximum, for backward's routing.
        index = ctx.empty(out, _INDEX)
        ctx.kernels.adaptive_max_pool2d_forward(x, y, index)
        ctx.save(index, tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        index, x_shape = ctx.saved
        gx = ctx.empty(x_shape)
        ctx.kernels.adaptive_max_pool2d_backward_input(gy, index, gx)
        return gx
