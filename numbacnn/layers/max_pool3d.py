"""max_pool3d: the largest value of each (dilated) window of a volume, as torch.nn.MaxPool3d
computes it. Its kernels (max_pool3d_cpu / max_pool3d_cuda) serve max_pool1d and max_pool2d
as well; the layer is written once for every rank in _pool.py."""

from __future__ import annotations

from typing import Any

from ._pool import MaxPoolNd


class MaxPool3d(MaxPoolNd):
    """Max pooling over (dilated) windows of a volume. (C, D, H, W) -> (C, D', P, Q)."""

    name = "max_pool3d"
    dims = 3

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check max_pool3d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 2, 4, 5, 4)],
             "bad_shapes": [([(2, 2, 1, 4, 4)], "smaller than the 2x2x2 window"),
                            ([(2, 2, 4, 4)], "expected an input of shape (C, D, H, W)")]},
            {"config": {"kernel_size": (1, 3, 2), "stride": (2, 1, 2), "padding": (0, 1, 1), "dilation": (2, 1, 1),
                        "ceil_mode": True}, "input_shapes": [(1, 2, 5, 4, 5)]},
        ]
