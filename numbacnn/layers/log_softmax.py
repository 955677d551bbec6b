"""log_softmax: x - max - log(sum(exp(x - max))) along one axis, as torch.nn.LogSoftmax computes
it; softmax's axis rules, and its kernel modules. Backward (from the output):
gx = gy - exp(y) * sum(gy)."""

from __future__ import annotations

from .softmax import Softmax


class LogSoftmax(Softmax):
    """Log of the softmax along axis ``dim`` (batch axis included). Any shape -> same shape."""

    name = "log_softmax"
    kernel = "log_softmax"
    kernels = "numbacnn.layers.softmax"
