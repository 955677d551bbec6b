"""Optimizer CUDA kernels over flat parameter arrays: one parameter element per thread; the
interface is optim_cpu.py's, the per-element rules numbacnn._optim_rules'."""

from numba import cuda

from ._jit import cuda_device, cuda_kernel
from ._optim_rules import adam_rule, sgd_rule

__all__ = ["sgd_update", "adam_update"]

THREADS = 256

sgd_at, adam_at = cuda_device(sgd_rule), cuda_device(adam_rule)


@cuda_kernel
def _sgd_update_kernel(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    i = cuda.grid(1)
    if i < p.size:
        sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first)


def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    _sgd_update_kernel[(p.size + THREADS - 1) // THREADS, THREADS](
        p, g, buf, lr, momentum, weight_decay, nesterov, first)


@cuda_kernel
def _adam_update_kernel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one):
    i = cuda.grid(1)
    if i < p.size:
        adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one)


def adam_update(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    _adam_update_kernel[(p.size + THREADS - 1) // THREADS, THREADS](
        p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, p.dtype.type(1))
