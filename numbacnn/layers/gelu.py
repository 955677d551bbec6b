"""gelu: y = x * Phi(x), Phi the standard normal CDF, as torch.nn.GELU computes it.

``approximate="none"`` is exact (through erf); ``"tanh"`` is the approximation
0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))). Forward and backward follow PyTorch's
formulas term by term (the gradient reads the input), so float64 agrees to rounding and NaN
and Inf land where PyTorch's float64 puts them: gelu(-inf) is NaN (-inf * 0), and so is every
gradient at +-inf. One difference, on purpose: gelu(+inf) is +inf in float32 too, as in
PyTorch's float64 and CUDA kernels, where its vectorised float32 CPU kernel gives NaN.
"""

from __future__ import annotations

from typing import Any

from ._activation import ConstantActivation

APPROXIMATIONS = ("none", "tanh")
# PyTorch's constants, computed as its C++ does: M_SQRT1_2; M_2_SQRTPI * M_SQRT1_2 * 0.5
# (1/sqrt(2 pi)); M_SQRT2 * M_2_SQRTPI * 0.5 (sqrt(2/pi)); the cubic term's weight.
ALPHA = 0.7071067811865476
BETA_EXACT = 0.3989422804014327
BETA_TANH = 0.7978845608028654
KAPPA = 0.044715


class GELU(ConstantActivation):
    """Gaussian error linear unit. Any shape -> same shape."""

    name = "gelu"
    flops_per_element = 8
    grad_from = "input"

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"approximate argument must be either none or tanh, found {approximate!r}")
        self.approximate = approximate

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check gelu``."""
        return [
            {"config": {}, "input_shapes": [(2, 7)]},
            {"config": {"approximate": "tanh"}, "input_shapes": [(2, 3, 4, 5)]},
            {"config": {}, "input_shapes": [(1, 3, 4, 5)]},
        ]

    def constants(self, dtype: Any) -> tuple:
        # One kernel serves both modes: the flag is a constant, so compile time stays one kernel's.
        return (self.approximate == "tanh",)
