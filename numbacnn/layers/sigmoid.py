"""sigmoid: y = 1 / (1 + exp(-x)), elementwise, without overflow for large |x|; kernels in
sigmoid_cpu.py / sigmoid_cuda.py."""

from __future__ import annotations

from ._activation import OutputGradActivation


class Sigmoid(OutputGradActivation):
    """Logistic sigmoid, y = 1 / (1 + exp(-x)). Any shape -> same shape."""

    name = "sigmoid"
    flops_per_element = 3
