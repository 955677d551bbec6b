"""flatten: (C, H, W) -> (C*H*W,) per sample, a view of the input (no kernel, no copy)."""

from __future__ import annotations

import math
from typing import Any

from ..layer import Ctx, Layer, Shape


class Flatten(Layer):
    """Flatten every dimension after the batch. (d1, ..., dk) -> (d1*...*dk,)."""

    name = "flatten"
    kernels = None  # a view: no kernels, every device

    def __init__(self, start_dim: int = 1) -> None:
        if isinstance(start_dim, bool) or not isinstance(start_dim, int):
            raise TypeError(f"start_dim must be an int, found {start_dim!r}")
        if start_dim != 1:
            raise ValueError(
                f"flatten supports start_dim=1 only (keep the batch, flatten the rest), found {start_dim}"
            )
        self.start_dim = start_dim

    def output_shape(self, x_shape: Shape) -> Shape:
        return (math.prod(x_shape),)

    # Both directions are reshapes of contiguous arrays: views on either device.
    def forward(self, ctx: Ctx, x: Any) -> Any:
        ctx.save(x.shape)
        ctx._repeatable(_nothing)  # a view of x: the replay hands the same one on for the same x
        return x.reshape(x.shape[0], x.size // x.shape[0])

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (shape,) = ctx.saved
        return gy.reshape(shape)


def _nothing() -> None:
    pass

