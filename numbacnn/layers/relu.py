"""relu: y = max(x, 0), elementwise; kernels in relu_cpu.py / relu_cuda.py."""

from __future__ import annotations

from ._activation import OutputGradActivation


class ReLU(OutputGradActivation):
    """Rectified linear unit, y = max(x, 0). Any shape -> same shape."""

    name = "relu"
    flops_per_element = 1
