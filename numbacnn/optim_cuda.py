"""Optimizer CUDA kernels over flat parameter arrays: one parameter element per thread; the
interface is optim_cpu.py's."""

import math

from numba import cuda

from ._jit import cuda_kernel

__all__ = ["sgd_update", "adam_update"]

THREADS = 256


@cuda_kernel
def _sgd_update_kernel(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i] + weight_decay * p[i]
        if buf.size:
            b = d if first else momentum * buf[i] + d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] -= lr * d


def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    _sgd_update_kernel[(p.size + THREADS - 1) // THREADS, THREADS](
        p, g, buf, lr, momentum, weight_decay, nesterov, first)


@cuda_kernel
def _adam_update_kernel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i] + weight_decay * p[i]
        m[i] = beta1 * m[i] + (one - beta1) * d
        v[i] = beta2 * v[i] + (one - beta2) * d * d
        p[i] = p[i] * decay - step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


def adam_update(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    _adam_update_kernel[(p.size + THREADS - 1) // THREADS, THREADS](
        p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, p.dtype.type(1))
