"""spp: spatial pyramid pooling (He et al. 2014, SPP-net).

For every level l, the input plane is split into an l x l grid of bins and each bin is
max-pooled; the levels' (C, l, l) results are flattened and concatenated, level after level,
so any input size gives C * sum(l * l) features. Bin i of a level spans rows
floor(i * H / l) .. ceil((i + 1) * H / l) (exclusive), as torch.nn.AdaptiveMaxPool2d splits
them: bins may overlap, and a plane smaller than the grid repeats rows. The gradient goes to
the first maximum of each bin (its last NaN if it holds any, as in PyTorch), which forward
records.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from numbacnn import Ctx, Layer, ShapeError

Shape = tuple[int, ...]


class SPP(Layer):
    """Spatial pyramid (max) pooling over l x l grids per level. (C, H, W) -> (C * sum(l * l),)."""

    name = "spp"

    def __init__(self, levels: Sequence[int] = (1, 2, 4)) -> None:
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
            raise TypeError(f"levels must be a non-empty sequence of ints, found {levels!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
            raise TypeError(f"levels must be a non-empty sequence of ints, found {levels!r}")
        if any(v < 1 for v in levels):
            raise ValueError(f"levels must be at least 1, found {list(levels)}")
        self.levels = tuple(levels)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """What ``numbacnn layers --check spp`` runs the conformance kit on."""
        return [
            {"config": {"levels": [1, 2, 4]}, "input_shapes": [(2, 3, 7, 9)],
             "bad_shapes": [([(2, 3, 7)], "expected an input of shape (C, H, W)")]},
            {"config": {"levels": [1, 2, 4]}, "input_shapes": [(2, 2, 3, 2)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        return (x_shape[0] * sum(level * level for level in self.levels),)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, H, W = input_shapes[0]
        return C * H * W * len(self.levels)  # one comparison per element and level (bins overlap little)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty((x.shape[0], self.output_shape(x.shape[1:])[0]))
        idx = ctx.empty(y.shape, np.int32)
        ctx.kernels.spp_forward(x, self.levels, y, idx)
        ctx.save(x, idx)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        x, idx = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty(x.shape)
        ctx.kernels.spp_backward_input(gy, idx, self.levels, gx)
        return gx
