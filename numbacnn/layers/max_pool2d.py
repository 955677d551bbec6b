"""max_pool2d: the largest value of each (dilated) window, as torch.nn.MaxPool2d computes it;
written once for every rank in _pool.py, on max_pool3d's kernels with a depth of 1."""

from __future__ import annotations

from typing import Any

from ._pool import MaxPoolNd


class MaxPool2d(MaxPoolNd):
    """Max pooling over (dilated) windows. (C, H, W) -> (C, P, Q)."""

    name = "max_pool2d"
    dims = 2

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check max_pool2d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 6, 6)],
             "bad_shapes": [([(2, 3, 1, 1)], "smaller than the 2x2 window")]},
            {"config": {"kernel_size": 3, "stride": 1, "padding": 1}, "input_shapes": [(1, 2, 5, 4)]},
            {"config": {"kernel_size": 3, "stride": 2, "dilation": (1, 2), "ceil_mode": True},
             "input_shapes": [(2, 2, 6, 7)]},
        ]
