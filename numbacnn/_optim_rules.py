"""The optimizers' per-element update rules, written once for both devices: plain functions
that optim_cpu compiles as ``cpu_inline`` helpers and optim_cuda as ``cuda_device`` ones, each
kernel calling them for element i of the flat arrays. (As ``jitable`` helpers, called rather
than inlined by Numba, the CPU loops did not vectorise: vgg_small's SGD update 0.908 ms
serial against 0.335 ms.) Scalars arrive typed like the parameters (the wrappers cast them),
so float32 stays float32; ``one`` is 1 in that type (a CUDA kernel cannot make it from the
array's dtype)."""

import math

__all__ = ["sgd_rule", "adam_rule"]


def sgd_rule(p, g, buf, i, lr, momentum, weight_decay, nesterov, first):
    """PyTorch's SGD: d = g + wd p; buf = momentum buf + d (buf = d at first); p -= lr d'
    (an empty ``buf``: no momentum)."""
    d = g[i] + weight_decay * p[i]
    if buf.size:
        b = d if first else momentum * buf[i] + d
        buf[i] = b
        d = d + momentum * b if nesterov else b
    p[i] -= lr * d


def adam_rule(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one):
    """PyTorch's Adam (``weight_decay`` added to g) and AdamW (``decay`` = 1 - lr wd scales p)."""
    d = g[i] + weight_decay * p[i]
    m[i] = beta1 * m[i] + (one - beta1) * d
    v[i] = beta2 * v[i] + (one - beta2) * d * d
    p[i] = p[i] * decay - step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)
