"""The optimizers' per-element update rules, written once for both devices (``jitable``):
optim_cpu's kernels and optim_cuda's call them for element i of the flat arrays. Scalars
arrive typed like the parameters (the wrappers cast them), so float32 stays float32; ``one``
is 1 in that type (a CUDA kernel cannot make it from the array's dtype)."""

import math

from ._jit import jitable

__all__ = ["sgd_at", "adam_at"]


@jitable
def sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first):
    """PyTorch's SGD: d = g + wd p; buf = momentum buf + d (buf = d at first); p -= lr d'
    (an empty ``buf``: no momentum)."""
    d = g[i] + weight_decay * p[i]
    if buf.size:
        b = d if first else momentum * buf[i] + d
        buf[i] = b
        d = d + momentum * b if nesterov else b
    p[i] -= lr * d


@jitable
def adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one):
    """PyTorch's Adam (``weight_decay`` added to g) and AdamW (``decay`` = 1 - lr wd scales p)."""
    d = g[i] + weight_decay * p[i]
    m[i] = beta1 * m[i] + (one - beta1) * d
    v[i] = beta2 * v[i] + (one - beta2) * d * d
    p[i] = p[i] * decay - step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)
