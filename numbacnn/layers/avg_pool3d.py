"""avg_pool3d: the mean of each window of a volume, as torch.nn.AvgPool3d computes it (divisor
rules in _pool.AvgPoolNd). Its kernels (avg_pool3d_cpu / avg_pool3d_cuda) serve avg_pool1d and
avg_pool2d as well; the layer is written once for every rank in _pool.py."""

from __future__ import annotations

from typing import Any

from ._pool import AvgPoolNd


class AvgPool3d(AvgPoolNd):
    """Average pooling over windows of a volume. (C, D, H, W) -> (C, D', P, Q)."""

    name = "avg_pool3d"
    dims = 3

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check avg_pool3d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 2, 4, 5, 4)],
             "bad_shapes": [([(2, 2, 1, 4, 4)], "smaller than the 2x2x2 window"),
                            ([(2, 2, 4, 4)], "expected an input of shape (C, D, H, W)")]},
            {"config": {"kernel_size": (3, 2, 3), "stride": (2, 1, 2), "padding": (1, 0, 1), "ceil_mode": True,
                        "count_include_pad": False}, "input_shapes": [(1, 2, 5, 4, 6)]},
            {"config": {"kernel_size": 2, "stride": 1, "padding": 1, "divisor_override": 3},
             "input_shapes": [(1, 1, 3, 3, 2)]},
        ]
