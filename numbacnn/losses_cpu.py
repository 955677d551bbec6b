"""Loss CPU kernels, one row (sample) at a time.

Serial on purpose: a loss sees (batch, classes) values, a few thousand, far fewer than it
takes to repay waking a thread pool.

The interface, the same in losses_cuda.py (x (N, K) predictions; every output written):
``cross_entropy_forward_backward(x, labels, rows, lse, gx)``: int64 ``labels`` (N,); per row
the softmax NLL into ``rows[0]``, 1 into ``rows[1]`` where the label's logit is the first
largest (a correct prediction), else 0, the row's log-sum-exp into ``lse`` (N,), and
(softmax - onehot) / N into ``gx``. ``mse_forward_backward(x, t, rows, gx)``: per-row sum of
squared errors into ``rows`` (N,), 2 (x - t) / x.size into ``gx``.
"""

import math

from ._jit import cpu_serial

__all__ = ["cross_entropy_forward_backward", "mse_forward_backward"]


@cpu_serial
def cross_entropy_forward_backward(x, labels, rows, lse, gx):
    # The row maximum is subtracted before exponentiating, so large logits cannot overflow.
    N, K = x.shape
    inv_n = x.dtype.type(1) / x.dtype.type(N)
    for n in range(N):
        m = x[n, 0]
        top = 0
        for k in range(1, K):
            if x[n, k] > m:
                m = x[n, k]
                top = k
        s = x.dtype.type(0)
        for k in range(K):
            s += math.exp(x[n, k] - m)
        log_s = math.log(s)
        lse[n] = log_s + m
        rows[0, n] = log_s + m - x[n, labels[n]]
        rows[1, n] = 1 if top == labels[n] else 0
        for k in range(K):
            gx[n, k] = math.exp(x[n, k] - m - log_s) * inv_n
        gx[n, labels[n]] -= inv_n


@cpu_serial
def mse_forward_backward(x, t, rows, gx):
    N, D = x.shape
    scale = x.dtype.type(2) / x.dtype.type(x.size)
    for n in range(N):
        s = x.dtype.type(0)
        for d in range(D):
            e = x[n, d] - t[n, d]
            s += e * e
            gx[n, d] = e * scale
        rows[n] = s
