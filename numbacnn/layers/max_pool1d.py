"""max_pool1d: the largest value of each (dilated) window along a sequence, as
torch.nn.MaxPool1d computes it; written once for every rank in _pool.py, on max_pool3d's
kernels with a depth and height of 1."""

from __future__ import annotations

from typing import Any

from ._pool import MaxPoolNd


class MaxPool1d(MaxPoolNd):
    """Max pooling over (dilated) windows of a sequence. (C, L) -> (C, L')."""

    name = "max_pool1d"
    dims = 1

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check max_pool1d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 7)],
             "bad_shapes": [([(2, 3, 1)], "shorter than the window of 2"),
                            ([(2, 3, 4, 4)], "expected an input of shape (C, L)")]},
            {"config": {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 2, "ceil_mode": True},
             "input_shapes": [(1, 2, 6)]},
        ]
