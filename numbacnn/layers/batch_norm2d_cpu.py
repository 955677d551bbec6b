"""batch_norm2d CPU kernels: x, y, gy, gx as (N, C, H*W); statistics and parameters (C,).

Per-channel sums accumulate in float64 (a channel can hold N*H*W = millions of values), in
vector lanes (the reductions opt into reassociation only: NaN and Inf propagate as ever), and
per-channel coefficients are cast back to the data's dtype before the elementwise loops, so
float32 data stays float32.

The interface, the same in batch_norm2d_cuda.py: ``batch_norm2d_stats(x, mean, var)``,
``batch_norm2d_update_running(mean, var, momentum, unbias, running_mean, running_var)``,
``batch_norm2d_update_cumulative(mean, var, unbias, count, running_mean, running_var)`` (the
cumulative average of momentum=None: count (1,) is the batches so far, incremented; unbias
typed like the statistics),
``batch_norm2d_forward(x, mean, var, w, b, eps, y)``,
``batch_norm2d_backward_weight(x, gy, mean, var, eps, sums, gw, gb)`` (sums (2, C): sum(gy)
and sum(gy * x_hat) per channel, written; gw, gb added into) and
``batch_norm2d_backward_input(x, gy, mean, var, w, eps, sums, batch_stats, gx)``. Without
affine parameters ``w``, ``b``, ``gw`` and ``gb`` are empty arrays.
"""

import math

from .._jit import REASSOC, cpu_kernel, cpu_serial, prange

__all__ = ["batch_norm2d_stats", "batch_norm2d_update_running", "batch_norm2d_update_cumulative",
           "batch_norm2d_forward", "batch_norm2d_backward_weight", "batch_norm2d_backward_input"]


@cpu_kernel(fastmath=REASSOC)
def batch_norm2d_stats(x, mean, var):
    N, C, L = x.shape
    M = N * L
    # Each iteration owns its channel: mean[c] and var[c] have one writer.
    for c in prange(C):
        acc = 0.0
        for n in range(N):
            for l in range(L):
                acc += x[n, c, l]
        m = acc / M
        acc = 0.0
        for n in range(N):
            for l in range(L):
                d = x[n, c, l] - m
                acc += d * d
        mean[c] = m
        var[c] = acc / M


@cpu_serial
def batch_norm2d_update_running(mean, var, momentum, unbias, running_mean, running_var):
    for c in range(mean.size):
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbias * var[c]


@cpu_serial
def batch_norm2d_update_cumulative(mean, var, unbias, count, running_mean, running_var):
    one = running_mean.dtype.type(1)
    factor = one / (count[0] + one)
    for c in range(mean.size):
        running_mean[c] = (one - factor) * running_mean[c] + factor * mean[c]
        running_var[c] = (one - factor) * running_var[c] + factor * unbias * var[c]
    count[0] += one


@cpu_kernel
def batch_norm2d_forward(x, mean, var, w, b, eps, y):
    N, C, L = x.shape
    zero = x.dtype.type(0)
    affine = w.size > 0
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        k = 1.0 / math.sqrt(var[c] + eps)
        scale = x.dtype.type(k * w[c] if affine else k)
        shift = b[c] if affine else zero
        m = mean[c]
        for l in range(L):
            y[n, c, l] = (x[n, c, l] - m) * scale + shift


@cpu_kernel(fastmath=REASSOC)
def batch_norm2d_backward_weight(x, gy, mean, var, eps, sums, gw, gb):
    N, C, L = x.shape
    affine = gw.size > 0
    # Each iteration owns its channel: sums[:, c], gw[c] and gb[c] have one writer.
    for c in prange(C):
        m = mean[c]
        sg = 0.0
        sgx = 0.0
        for n in range(N):
            for l in range(L):
                g = gy[n, c, l]
                sg += g
                sgx += g * (x[n, c, l] - m)
        sgx /= math.sqrt(var[c] + eps)
        sums[0, c] = sg
        sums[1, c] = sgx
        if affine:
            gw[c] += sgx
            gb[c] += sg


@cpu_kernel
def batch_norm2d_backward_input(x, gy, mean, var, w, eps, sums, batch_stats, gx):
    N, C, L = x.shape
    M = N * L
    affine = w.size > 0
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        inv = 1.0 / math.sqrt(var[c] + eps)
        k = inv * w[c] if affine else inv
        scale = x.dtype.type(k)
        if not batch_stats:
            # Fixed statistics: gx = k * gy alone. x is not read, so an Inf in x does not
            # turn its gradient into NaN through a zero slope (0 * Inf), as in PyTorch.
            for l in range(L):
                gx[n, c, l] = scale * gy[n, c, l]
            continue
        # With batch statistics the mean and variance depend on x too:
        # gx = k * (gy - mean(gy) - x_hat * mean(gy * x_hat)).
        shift = x.dtype.type(-k * sums[0, c] / M)
        slope = x.dtype.type(-k * inv * sums[1, c] / M)
        m = mean[c]
        for l in range(L):
            gx[n, c, l] = scale * gy[n, c, l] + slope * (x[n, c, l] - m) + shift
