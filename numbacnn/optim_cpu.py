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

from ._jit import cpu_inline, cpu_kernel, cpu_serial, prange
from ._optim_rules import adam_rule, sgd_rule
from ._threads import PARALLEL_MIN

__all__ = ["sgd_update", "adam_update"]

sgd_at, adam_at = cpu_inline(sgd_rule), cpu_inline(adam_rule)


@cpu_serial
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(p.size):
        sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first)


@cpu_kernel
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in prange(p.size):
        sgd_at(p, g, buf, i, lr, momentum, weight_decay, nesterov, first)


def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    """PyTorch's SGD (numbacnn._optim_rules.sgd_rule on every element)."""
    kernel = _sgd_serial if p.size < PARALLEL_MIN else _sgd_parallel
    kernel(p, g, buf, lr, momentum, weight_decay, nesterov, first)


@cpu_serial
def _adam_serial(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    one = p.dtype.type(1)
    for i in range(p.size):
        adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one)


@cpu_kernel
def _adam_parallel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    one = p.dtype.type(1)
    for i in prange(p.size):
        adam_at(p, g, m, v, i, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay, one)


def adam_update(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay):
    """PyTorch's Adam and AdamW (numbacnn._optim_rules.adam_rule on every element)."""
    kernel = _adam_serial if p.size < PARALLEL_MIN else _adam_parallel
    kernel(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, weight_decay, decay)
