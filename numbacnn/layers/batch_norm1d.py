"""batch_norm1d: per-channel normalisation of vectors or sequences, as torch.nn.BatchNorm1d.

The statistics run over N for (N, C) inputs and over (N, L) for (N, C, L) ones; every option
(eps, momentum including None, affine, track_running_stats) is batch_norm2d's, and so are the
kernels, on an (N, C, L) view (L = 1 for vectors).
"""

from __future__ import annotations

from typing import Any

from ..layer import Shape, ShapeError
from .batch_norm2d import BatchNorm2d


class BatchNorm1d(BatchNorm2d):
    """Batch normalisation over (N,) or (N, L) per channel. (C,) -> (C,), (C, L) -> (C, L);
    weight, bias (C,); buffers running_mean, running_var (C,)."""

    name = "batch_norm1d"
    kernels = "numbacnn.layers.batch_norm2d"

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check batch_norm1d``."""
        return [
            {"config": {"momentum": None}, "input_shapes": [(4, 3)], "training": True,
             "bad_shapes": [([(2, 3, 4, 4)], "expected an input of shape (C,) or (C, L)")]},
            {"config": {}, "input_shapes": [(2, 3, 5)], "training": True},
            {"config": {"affine": False}, "input_shapes": [(3, 2, 4)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) not in (1, 2):
            raise ShapeError(f"expected an input of shape (C,) or (C, L), found {tuple(x_shape)}")
        return x_shape
