"""avg_pool2d CUDA kernels: (N, C, H, W) arrays, one output element per thread.

``geometry`` is (R, S, stride_h, stride_w, pad_h, pad_w, count_include_pad, divisor_override),
the override 0 when there is none; the interface is avg_pool2d_cpu.py's. Backward needs no
atomics: each input element's thread gathers from the windows that contain it, in the CPU
kernel's scatter order.
"""

from numba import cuda

from .._jit import cuda_device, cuda_kernel

__all__ = ["avg_pool2d_forward", "avg_pool2d_backward_input"]

THREADS = 256


@cuda_device
def _window(p, size, k, stride, pad):
    """Window p's input rows [lo, hi) and its length clipped to the padded input only."""
    start = p * stride - pad
    end = min(start + k, size + pad)
    return max(start, 0), min(end, size), end - start


@cuda_device
def _divisor(h0, h1, padded_h, w0, w1, padded_w, include_pad, override):
    if override > 0:
        return override
    if include_pad:
        return padded_h * padded_w
    return (h1 - h0) * (w1 - w0)


@cuda_kernel
def _avg_pool2d_forward_kernel(x, geometry, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    R, S, sh, sw, ph, pw, include_pad, override = geometry
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P, Q = y.shape[2], y.shape[3]
    q = i % Q
    p = (i // Q) % P
    c = (i // (Q * P)) % C
    n = i // (Q * P * C)
    h0, h1, hp = _window(p, H, R, sh, ph)
    w0, w1, wp = _window(q, W, S, sw, pw)
    acc = x.dtype.type(0)
    for h in range(h0, h1):
        for w in range(w0, w1):
            acc += x[n, c, h, w]
    div = _divisor(h0, h1, hp, w0, w1, wp, include_pad, override)
    y[n, c, p, q] = acc / x.dtype.type(div)


def avg_pool2d_forward(x, geometry, y):
    _avg_pool2d_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, geometry, y)


@cuda_kernel
def _avg_pool2d_backward_input_kernel(gy, geometry, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    R, S, sh, sw, ph, pw, include_pad, override = geometry
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    w = i % W
    h = (i // W) % H
    c = (i // (W * H)) % C
    n = i // (W * H * C)
    # Windows p with p*sh - ph <= h < p*sh - ph + R, ascending (the CPU's scatter order).
    p_lo = max(0, (h + ph - R + sh) // sh)
    p_hi = min(P - 1, (h + ph) // sh)
    q_lo = max(0, (w + pw - S + sw) // sw)
    q_hi = min(Q - 1, (w + pw) // sw)
    acc = gx.dtype.type(0)
    for p in range(p_lo, p_hi + 1):
        h0, h1, hp = _window(p, H, R, sh, ph)
        for q in range(q_lo, q_hi + 1):
            w0, w1, wp = _window(q, W, S, sw, pw)
            div = _divisor(h0, h1, hp, w0, w1, wp, include_pad, override)
            acc += gy[n, c, p, q] / gx.dtype.type(div)
    gx[n, c, h, w] = acc


def avg_pool2d_backward_input(gy, geometry, gx):
    _avg_pool2d_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, geometry, gx)
