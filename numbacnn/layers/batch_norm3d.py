"""batch_norm3d: per-channel normalisation of volumes, as torch.nn.BatchNorm3d computes it.

The statistics run over (N, D, H, W); every option (eps, momentum including None, affine,
track_running_stats) is batch_norm2d's, and so are the kernels, on an (N, C, D*H*W) view.
"""

from __future__ import annotations

from typing import Any

from ..layer import Shape, ShapeError
from .batch_norm2d import BatchNorm2d


class BatchNorm3d(BatchNorm2d):
    """Batch normalisation over (N, D, H, W) per channel. (C, D, H, W) -> (C, D, H, W);
    weight, bias (C,); buffers running_mean, running_var (C,)."""

    name = "batch_norm3d"
    kernels = "numbacnn.layers.batch_norm2d"

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check batch_norm3d``."""
        return [
            {"config": {}, "input_shapes": [(2, 3, 2, 3, 2)], "training": True,
             "bad_shapes": [([(2, 3, 4, 4)], "expected an input of shape (C, D, H, W)")]},
            {"config": {"momentum": None, "affine": False}, "input_shapes": [(2, 2, 2, 2, 3)], "training": True},
            {"config": {}, "input_shapes": [(1, 2, 3, 2, 2)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 4:
            raise ShapeError(f"expected an input of shape (C, D, H, W), found {tuple(x_shape)}")
        return x_shape
