"""avg_pool1d: the mean of each window along a sequence, as torch.nn.AvgPool1d computes it
(which has no divisor_override); written once for every rank in _pool.py, on avg_pool3d's
kernels with a depth and height of 1."""

from __future__ import annotations

from typing import Any

from ._pool import AvgPoolNd, Size


class AvgPool1d(AvgPoolNd):
    """Average pooling over windows of a sequence. (C, L) -> (C, L')."""

    name = "avg_pool1d"
    dims = 1

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check avg_pool1d``."""
        return [
            {"config": {"kernel_size": 2}, "input_shapes": [(2, 3, 7)],
             "bad_shapes": [([(2, 3, 1)], "shorter than the window of 2"),
                            ([(2, 3, 4, 4)], "expected an input of shape (C, L)")]},
            {"config": {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
             "input_shapes": [(1, 2, 6)]},
        ]
