"""elu: y = x if x > 0 else alpha * (exp(x) - 1), elementwise, as torch.nn.ELU computes it.

The forward uses expm1 (exact near 0, as PyTorch does). The gradient is gy where x > 0 and
gy * alpha * exp(x) elsewhere, read off the input as PyTorch's out-of-place elu does (only
its in-place elu_ reads the output, and it refuses a negative alpha for that reason); NaN in
x lets gy through, as in PyTorch's scalar and CUDA kernels (its float64 SIMD CPU kernel gives
NaN there).
"""

from __future__ import annotations

from typing import Any

from ._activation import ConstantActivation, number


class ELU(ConstantActivation):
    """Exponential linear unit. Any shape -> same shape."""

    name = "elu"
    flops_per_element = 3
    grad_from = "input"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = number(alpha, "alpha")

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check elu``."""
        return [
            {"config": {}, "input_shapes": [(2, 7)]},
            {"config": {"alpha": 0.5}, "input_shapes": [(2, 3, 4, 5)]},
            {"config": {"alpha": -1.5}, "input_shapes": [(1, 3, 5)]},
        ]

    def constants(self, dtype: Any) -> tuple:
        return (dtype.type(self.alpha),)
