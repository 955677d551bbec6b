"""batch_norm2d CPU kernels: x, y, gy, gx as (N, C, H*W); statistics and parameters (C,).

Per-channel sums accumulate in float64 (a channel can hold N*H*W = millions of values), in
vector lanes (the reductions opt into reassociation only: NaN and Inf propagate as ever); the
elementwise loops and their per-channel coefficients compute in the data's dtype, as the CUDA
kernels do, so float32 data stays float32 and vectorises at full width.

(N, C) data (L = 1, batch_norm1d's vectors) holds a channel's values a row apart, a stride the
caches serve badly: the statistics read a channel-major copy made in ``scratch`` (the output
buffer, written only later), and the elementwise loops run along the rows.

The interface, the same in batch_norm2d_cuda.py: ``batch_norm2d_stats(x, mean, var, scratch)``
(scratch: an array of x's shape the kernel may overwrite),
``batch_norm2d_update_running(mean, var, momentum, unbias, running_mean, running_var)``,
``batch_norm2d_update_cumulative(mean, var, unbias, count, running_mean, running_var)`` (the
cumulative average of momentum=None: count (1,) is the batches so far, incremented; unbias
typed like the statistics),
``batch_norm2d_forward(x, mean, var, w, b, eps, relu, y)`` (``relu``: y = max(y, 0) as relu
computes it, NaN kept: a relu fused into the batch norm, numbacnn/_fuse_train.py),
``batch_norm2d_backward_weight(x, gy, mean, var, eps, sums, gw, gb)`` (sums (2, C): sum(gy)
and sum(gy * x_hat) per channel, written; gw, gb added into) and
``batch_norm2d_backward_input(x, gy, mean, var, w, eps, sums, batch_stats, gx)``. Without
affine parameters ``w``, ``b``, ``gw`` and ``gb`` are empty arrays.
"""

import math

from .._jit import REASSOC, cpu_inline, cpu_kernel, cpu_serial, prange

__all__ = ["batch_norm2d_stats", "batch_norm2d_update_running", "batch_norm2d_update_cumulative",
           "batch_norm2d_forward", "batch_norm2d_backward_weight", "batch_norm2d_backward_input"]


@cpu_kernel
def _channel_major(x, t):
    """t (1, C, N) = x (N, C, 1), in blocks of 16 channels: one cache line of each row."""
    N, C = x.shape[0], x.shape[1]
    for block in prange((C + 15) // 16):
        for n in range(N):
            for c in range(block * 16, min(C, block * 16 + 16)):
                t[0, c, n] = x[n, c, 0]


@cpu_kernel(fastmath=REASSOC)
def batch_norm2d_stats(x, mean, var, scratch):
    N, C, L = x.shape
    M = N * L
    if L == 1 and N > 1:
        t = scratch.reshape((1, C, N))
        _channel_major(x, t)
        x = t
        N, L = 1, M
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


@cpu_inline
def _scale_shift(x, var, w, b, eps, c):
    """y = (x - mean) * scale + shift on channel c, in x's dtype."""
    k = x.dtype.type(1) / math.sqrt(var[c] + eps)
    if w.size > 0:
        return k * w[c], b[c]
    return k, x.dtype.type(0)


@cpu_kernel
def batch_norm2d_forward(x, mean, var, w, b, eps, relu, y):
    N, C, L = x.shape
    zero = x.dtype.type(0)
    if L == 1:  # along the rows: the inner loop runs over contiguous channels
        for n in prange(N):
            for c in range(C):
                scale, shift = _scale_shift(x, var, w, b, eps, c)
                v = (x[n, c, 0] - mean[c]) * scale + shift
                y[n, c, 0] = zero if relu and v <= zero else v
    else:
        for nc in prange(N * C):
            n, c = nc // C, nc % C
            scale, shift = _scale_shift(x, var, w, b, eps, c)
            m = mean[c]
            if relu:  # relu's rule (relu_cpu): NaN stays NaN, -0.0 becomes 0
                for l in range(L):
                    v = (x[n, c, l] - m) * scale + shift
                    y[n, c, l] = zero if v <= zero else v
            else:
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


@cpu_inline
def _input_grad_coefficients(x, var, w, eps, sums, M, batch_stats, c):
    """gx = scale * gy + slope * (x - mean) + shift on channel c, typed like x. With batch
    statistics the mean and variance depend on x too: gx = k * (gy - mean(gy) - x_hat *
    mean(gy * x_hat)); with fixed ones slope and shift are 0 (and x is not read)."""
    T = x.dtype.type
    inv = T(1) / math.sqrt(var[c] + eps)
    k = inv * w[c] if w.size > 0 else inv
    if not batch_stats:
        return k, T(0), T(0)
    return k, -k * inv * sums[1, c] / T(M), -k * sums[0, c] / T(M)


@cpu_kernel
def batch_norm2d_backward_input(x, gy, mean, var, w, eps, sums, batch_stats, gx):
    N, C, L = x.shape
    M = N * L
    if not batch_stats:
        # Fixed statistics: gx = k * gy alone. x is not read, so an Inf in x does not turn its
        # gradient into NaN through a zero slope (0 * Inf), as in PyTorch.
        for nc in prange(N * C):
            n, c = nc // C, nc % C
            scale, slope, shift = _input_grad_coefficients(x, var, w, eps, sums, M, batch_stats, c)
            for l in range(L):
                gx[n, c, l] = scale * gy[n, c, l]
    elif L == 1:  # along the rows: the inner loop runs over contiguous channels
        for n in prange(N):
            for c in range(C):
                scale, slope, shift = _input_grad_coefficients(x, var, w, eps, sums, M, batch_stats, c)
                gx[n, c, 0] = scale * gy[n, c, 0] + slope * (x[n, c, 0] - mean[c]) + shift
    else:
        for nc in prange(N * C):
            n, c = nc // C, nc % C
            scale, slope, shift = _input_grad_coefficients(x, var, w, eps, sums, M, batch_stats, c)
            m = mean[c]
            for l in range(L):
                gx[n, c, l] = scale * gy[n, c, l] + slope * (x[n, c, l] - m) + shift
