"""Optimizer CPU kernels over flat parameter arrays (one call per step: the model's parameters,
gradients and state each live in one flat array).

An update is a few memory-bound operations per element: under ``PARALLEL_MIN`` parameters
it runs in the calling thread (``_sgd_serial``, ``_adam_serial``), since waking a thread pool
costs more than the update (measured: 20 ms per parallel launch on a busy 2-core machine,
against 1.3 us serial); from there the elements are split over Numba's threads
(``_sgd_parallel``, ``_adam_parallel``): vgg_small's 815,000 parameters, SGD with momentum, 2
threads, 0.335 ms serial against 0.168 ms split. Two kernels, not one with both loops, so a
model under the threshold (``numbacnn train``'s lenet5, 61,706 parameters) compiles only the
serial one (0.11 s against 0.34 s for both loops).
Scalars arrive typed like the parameters (the wrapper casts them), so float32 stays float32.

The interface, the same in optim_cuda.py (flat p, g and state arrays, updated in place):
``sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first)`` (an empty ``buf``
without momentum) and ``adam_update(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps,
weight_decay, decay)``.
"""

import math

from ._jit import cpu_inline, cpu_kernel, cpu_serial, prange
from ._threads import PARALLEL_MIN

__all__ = ["sgd_update", "adam_update"]


@cpu_inline
def _sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first):
    d = g[i] + weight_decay * p[i]
    if buf.size:
        b = d if first else momentum * buf[i] + d
        buf[i] = b
        d = d + momentum * b if nesterov else b
    p[i] -= lr * d


@cpu_serial
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(p.size):
        _sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first)


@cpu_kernel
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in prange(p.size):
        _sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first)


def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    """PyTorch's SGD: d = g + wd p; buf = momentum buf + d (buf = d at first); p -= lr d'."""
    kernel = _sgd_serial if p.size < PARALLEL_MIN else _sgd_parallel
    kernel(p, g, buf, lr, momentum, weight_decay, nesterov, first)


@cpu_inline
def _adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    one = p.dtype.type(1)
    d = g[i] + weight_decay * p[i]
    m[i] = beta1 * m[i] + (one - beta1) * d
    v[i] = beta2 * v[i] + (one - beta2) * d * d
    p[i] = p[i] * decay - step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


@cpu_serial
def _adam_serial(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    for i in range(p.size):
        _adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay)


@cpu_kernel
def _adam_parallel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    for i in prange(p.size):
        _adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay)


def adam_update(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    """PyTorch's Adam (``weight_decay`` added to g) and AdamW (``decay`` = 1 - lr wd scales p)."""
    kernel = _adam_serial if p.size < PARALLEL_MIN else _adam_parallel
    kernel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay)
