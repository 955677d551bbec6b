"""avg_pool2d: the mean of each window, as torch.nn.AvgPool2d computes it (divisor rules in
_pool.AvgPoolNd); written once for every rank, on avg_pool3d's kernels with a depth of 1."""

from __future__ import annotations

from typing import Any

from ._pool import AvgPoolNd


class AvgPool2d(AvgPoolNd):
    """Average pooling over windows. (C, H, W) -> (C, P, Q)."""

    name = "avg_pool2d"
    dims = 2

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check avg_pool2d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 6, 6)],
             "bad_shapes": [([(2, 3, 1, 1)], "smaller than the 2x2 window")]},
            {"config": {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
             "input_shapes": [(2, 2, 6, 6)]},
            {"config": {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
             "input_shapes": [(1, 2, 5, 4)]},
        ]
