"""tanh: y = tanh(x), elementwise; kernels in tanh_cpu.py / tanh_cuda.py."""

from __future__ import annotations

from ._activation import OutputGradActivation


class Tanh(OutputGradActivation):
    """Hyperbolic tangent, y = tanh(x). Any shape -> same shape."""

    name = "tanh"
    flops_per_element = 1
