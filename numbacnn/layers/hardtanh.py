"""hardtanh: y = clamp(x, min_val, max_val), elementwise, as torch.nn.Hardtanh computes it.

The gradient is gy strictly inside (min_val, max_val) and 0 at and beyond both edges (PyTorch's
hardtanh_backward: x <= min_val or x >= max_val gives 0); NaN passes through both ways, as in
PyTorch's scalar and CUDA kernels (its SIMD CPU kernel zeroes the gradient at a NaN input). It
is read off the output: y equals an edge exactly where x is at or beyond it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._activation import ConstantActivation, number


class Hardtanh(ConstantActivation):
    """Hard tanh, y = min(max(x, min_val), max_val). Any shape -> same shape."""

    name = "hardtanh"
    flops_per_element = 2

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        self.min_val = number(min_val, "min_val", infinite=True)
        self.max_val = number(max_val, "max_val", infinite=True)
        if self.min_val > self.max_val:
            raise ValueError(f"min_val cannot be greater than max_val, found min_val={min_val}, max_val={max_val}")

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check hardtanh``: inputs off the edges, where
        the gradient jumps and finite differences would straddle it."""
        return [
            {"config": {}, "input_shapes": [(2, 7)], "inputs": [_off_edges((2, 7), -1.0, 1.0)]},
            {"config": {"min_val": -0.5, "max_val": 2.0}, "input_shapes": [(2, 3, 4, 5)],
             "inputs": [_off_edges((2, 3, 4, 5), -0.5, 2.0)]},
        ]

    def constants(self, dtype: Any) -> tuple:
        return (dtype.type(self.min_val), dtype.type(self.max_val))


def _off_edges(shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Values spread over (lo - 2, hi + 2), none within 0.01 of an edge."""
    x = np.random.default_rng(0).uniform(lo - 2, hi + 2, shape)
    for edge in (lo, hi):
        near = np.abs(x - edge) < 0.01
        x[near] = edge + 0.05
    return x
