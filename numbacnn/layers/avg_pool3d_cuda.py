"""avg_pool3d CUDA kernels: (N, C, D, H, W) arrays, one output element per thread; they serve
avg_pool1d and avg_pool2d too, on (N, C, 1, 1, L) and (N, C, 1, H, W) views.

``geometry`` is (T, R, S, stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, count_include_pad,
divisor_override), the override 0 when there is none; the interface is avg_pool3d_cpu.py's.
Backward needs no atomics: each input element's thread gathers from the windows that contain
it, in the CPU kernel's scatter order.
"""

from numba import cuda

from .._jit import cuda_device, cuda_kernel
from ._pool3d_rules import divisor as _divisor, window as _window

__all__ = ["avg_pool3d_forward", "avg_pool3d_backward_input"]

THREADS = 256


@cuda_device
def _first_last(h, size_out, k, stride, pad):
    """The windows p with p * stride - pad <= h < p * stride - pad + k, as [lo, hi]."""
    return max(0, (h + pad - k + stride) // stride), min(size_out - 1, (h + pad) // stride)


@cuda_kernel
def _avg_pool3d_forward_kernel(x, geometry, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    T, R, S, sd, sh, sw, pd, ph, pw, include_pad, override = geometry
    C, D, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    q = i % Q
    p = (i // Q) % P
    od = (i // (Q * P)) % Do
    c = (i // (Q * P * Do)) % C
    n = i // (Q * P * Do * C)
    d0, d1, dp = _window(od, D, T, sd, pd)
    h0, h1, hp = _window(p, H, R, sh, ph)
    w0, w1, wp = _window(q, W, S, sw, pw)
    acc = x.dtype.type(0)
    for d in range(d0, d1):
        for h in range(h0, h1):
            for w in range(w0, w1):
                acc += x[n, c, d, h, w]
    div = _divisor(d0, d1, dp, h0, h1, hp, w0, w1, wp, include_pad, override)
    y[n, c, od, p, q] = acc / x.dtype.type(div)


def avg_pool3d_forward(x, geometry, y):
    _avg_pool3d_forward_kernel[(y.size + THREADS - 1) // THREADS, THREADS](x, geometry, y)


@cuda_kernel
def _avg_pool3d_backward_input_kernel(gy, geometry, gx):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    T, R, S, sd, sh, sw, pd, ph, pw, include_pad, override = geometry
    C, D, H, W = gx.shape[1], gx.shape[2], gx.shape[3], gx.shape[4]
    Do, P, Q = gy.shape[2], gy.shape[3], gy.shape[4]
    w = i % W
    h = (i // W) % H
    d = (i // (W * H)) % D
    c = (i // (W * H * D)) % C
    n = i // (W * H * D * C)
    od_lo, od_hi = _first_last(d, Do, T, sd, pd)
    p_lo, p_hi = _first_last(h, P, R, sh, ph)
    q_lo, q_hi = _first_last(w, Q, S, sw, pw)
    acc = gx.dtype.type(0)
    # Ascending (od, p, q): the CPU's scatter order.
    for od in range(od_lo, od_hi + 1):
        d0, d1, dp = _window(od, D, T, sd, pd)
        for p in range(p_lo, p_hi + 1):
            h0, h1, hp = _window(p, H, R, sh, ph)
            for q in range(q_lo, q_hi + 1):
                w0, w1, wp = _window(q, W, S, sw, pw)
                div = _divisor(d0, d1, dp, h0, h1, hp, w0, w1, wp, include_pad, override)
                acc += gy[n, c, od, p, q] / gx.dtype.type(div)
    gx[n, c, d, h, w] = acc


def avg_pool3d_backward_input(gy, geometry, gx):
    _avg_pool3d_backward_input_kernel[(gx.size + THREADS - 1) // THREADS, THREADS](gy, geometry, gx)
