"""global_max_pool2d: the largest value of each channel's plane, flattened to (N, C), like
global_avg_pool2d; torch's adaptive_max_pool2d to 1x1, flattened, whose kernels it runs on
(N, C, 1, 1) views. The gradient goes to the plane's first maximum (its last NaN if any), as
adaptive_max_pool2d routes it; x.amax((2, 3)) in PyTorch would split it among ties instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layer import Ctx
from ._pool import GlobalPool2d

_INDEX = np.dtype(np.int32)


class GlobalMaxPool2d(GlobalPool2d):
    """Maximum over each channel's H x W plane. (C, H, W) -> (C,)."""

    name = "global_max_pool2d"
    kernels = "numbacnn.layers.adaptive_max_pool2d"

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check global_max_pool2d``."""
        return [{"config": {}, "input_shapes": [(2, 3, 5, 4)],
                 "bad_shapes": [([(2, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)")]}]

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N, C = x.shape[:2]
        y = ctx.empty((N, C))
        index = ctx.empty((N, C), _INDEX)
        ctx.kernels.adaptive_max_pool2d_forward(x, y.reshape(N, C, 1, 1), index.reshape(N, C, 1, 1))
        ctx.save(index, tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        index, x_shape = ctx.saved
        N, C = x_shape[:2]
        gx = ctx.empty(x_shape)
        ctx.kernels.adaptive_max_pool2d_backward_input(gy.reshape(N, C, 1, 1), index.reshape(N, C, 1, 1), gx)
        return gx
