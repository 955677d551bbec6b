"""lp_pool2d CUDA kernels: (N, C, H, W) arrays, one output element per thread.

``geometry`` is (R, S, stride_h, stride_w); ``powers`` is (p, p - 1, 1/p, 1/p - 1) in the
arrays' dtype; the interface is lp_pool2d_cpu.py's, step for step. Backward needs no atomics:
each input element's thread gathers from the windows that contain it, in the CPU kernel's
scatter order, then applies x^p's gradient as the CPU does after its sum.
"""

import math

from numba import cuda

from .._jit import cuda_device, cuda_kernel
from ._lp_pool_rules import sign as _sign, window_max as _window_max

__all__ = ["lp_pool2d_forward", "lp_pool2d_backward_input"]

THREADS = 256


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_device
def _pow(v, e, one):
    # PyTorch's: small integer powers multiplied out (exact where pow may be an ulp off), and
    # a square root for 0.5 (NaN for -inf, -0 for -0, where pow gives inf and 0); the guard
    # keeps math.sqrt from raising in the simulator. The
    # constants are built from ``one``, of v's type: a bare 2 would compare in float64.
    zero, two = one - one, one + one
    if e == two:
        return v * v
    if e == one:
        return v
    if e == two + one:
        return v * v * v
    if e == one / two:
        return math.sqrt(v) if v >= zero else (v - v) / (v - v)
    return v ** e


@cuda_device
def _windows_over(h, size_out, k, stride):
    """The windows i with i * stride <= h < i * stride + k, as [lo, hi]."""
    return max(0, (h - k + stride) // stride), min(size_out - 1, h // stride)


@cuda_kernel
def _lp_pool2d_forward_kernel(x, geometry, powers, y, c):
    t = cuda.grid(1)
    if t >= y.size:
        return
    R, S, sh, sw = geometry
    p, _, inv, _ = powers
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P, Q = y.shape[2], y.shape[3]
    j = t % Q
    i = (t // Q) % P
    ch = (t // (Q * P)) % C
    n = t // (Q * P * C)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    # One kernel for both of PyTorch's formulas (p is the same for every thread: no divergence).
    if math.isinf(p):
        sign = one if p > zero else -one
        best, _ = _window_max(x, n, ch, i, j, geometry, sign)
        y[n, ch, i, j] = sign * best
        c[n, ch, i, j] = sign * best
        return
    h0, h1 = i * sh, min(i * sh + R, H)
    w0, w1 = j * sw, min(j * sw + S, W)
    acc = zero
    for h in range(h0, h1):
        for w in range(w0, w1):
            acc += _pow(x[n, ch, h, w], p, one)
    cc = (acc / x.dtype.type((h1 - h0) * (w1 - w0)) + zero) * x.dtype.type(R * S)
    c[n, ch, i, j] = cc
    y[n, ch, i, j] = _pow(cc, inv, one)


def lp_pool2d_forward(x, geometry, powers, y, c):
    _lp_pool2d_forward_kernel[_blocks(y.size), THREADS](x, geometry, powers, y, c)


@cuda_kernel
def _lp_pool2d_backward_input_kernel(x, c, gy, geometry, powers, gx):
    t = cuda.grid(1)
    if t >= gx.size:
        return
    R, S, sh, sw = geometry
    p, pm1, inv, invm1 = powers
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    w = t % W
    h = (t // W) % H
    ch = (t // (W * H)) % C
    n = t // (W * H * C)
    zero, one, size = x.dtype.type(0), x.dtype.type(1), x.dtype.type(R * S)
    i_lo, i_hi = _windows_over(h, P, R, sh)
    j_lo, j_hi = _windows_over(w, Q, S, sw)
    acc = zero
    if math.isinf(p):
        sign = one if p > zero else -one
        for i in range(i_lo, i_hi + 1):
            for j in range(j_lo, j_hi + 1):
                _, at = _window_max(x, n, ch, i, j, geometry, sign)
                if at == h * W + w:
                    acc += gy[n, ch, i, j]
        gx[n, ch, h, w] = acc * _sign(x[n, ch, h, w], one)
        return
    for i in range(i_lo, i_hi + 1):
        h0, h1 = i * sh, min(i * sh + R, H)
        for j in range(j_lo, j_hi + 1):
            w0, w1 = j * sw, min(j * sw + S, W)
            cc = c[n, ch, i, j]
            g = gy[n, ch, i, j] * (inv * _pow(cc, invm1, one)) * size
            s = _sign(cc, one)
            g = g * s * s if cc != zero else zero
            acc += g / x.dtype.type((h1 - h0) * (w1 - w0))
    gx[n, ch, h, w] = acc * (p * _pow(x[n, ch, h, w], pm1, one))


def lp_pool2d_backward_input(x, c, gy, geometry, powers, gx):
    _lp_pool2d_backward_input_kernel[_blocks(gx.size), THREADS](x, c, gy, geometry, powers, gx)
