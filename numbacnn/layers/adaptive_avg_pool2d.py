"""adaptive_avg_pool2d: the mean of each of P x Q bins that split the plane, as
torch.nn.AdaptiveAvgPool2d computes it: any input size gives the same output size, so it is
the layer to put before ``flatten`` and ``linear`` in a net that takes free image sizes.

Bin i of an axis of n inputs and P outputs spans floor(i * n / P) .. ceil((i + 1) * n / P)
(exclusive): bins may overlap, and a plane smaller than the output repeats inputs. The mean is
the bin's sum divided by its height, then by its width, as PyTorch divides.
"""

from __future__ import annotations

from typing import Any

from ..layer import Ctx
from ._pool import AdaptivePool2d


class AdaptiveAvgPool2d(AdaptivePool2d):
    """Average pooling to a fixed output size. (C, H, W) -> (C, P, Q)."""

    name = "adaptive_avg_pool2d"

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check adaptive_avg_pool2d``."""
        return [
            {"config": {"output_size": (2, 3)}, "input_shapes": [(2, 3, 5, 7)],
             "bad_shapes": [([(2, 3, 5)], "expected an input of shape (C, H, W)")]},
            {"config": {"output_size": (4, None)}, "input_shapes": [(1, 2, 3, 2)]},
        ]

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty((x.shape[0], *self.output_shape(tuple(x.shape[1:]))))
        ctx.kernels.adaptive_avg_pool2d_forward(x, y)
        ctx.save(tuple(x.shape))
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        (x_shape,) = ctx.saved
        gx = ctx.empty(x_shape)
        ctx.kernels.adaptive_avg_pool2d_backward_input(gy, gx)
        return gx
