"""lp_pool2d CPU kernels: (N, C, H, W) arrays, parallel over the N*C planes.

``geometry`` is (R, S, stride_h, stride_w); ``powers`` is (p, p - 1, 1/p, 1/p - 1) in the
arrays' dtype. The interface, the same in lp_pool2d_cuda.py:
``lp_pool2d_forward(x, geometry, powers, y, c)`` writes y and c (the scaled window mean whose
root y is); ``lp_pool2d_backward_input(x, c, gy, geometry, powers, gx)`` writes all of gx.
Each step is PyTorch's (see lp_pool2d.py), in its order, so NaN, Inf and zeros agree; for
p = +-inf, the max pooling of |x| (of -|x|, negated) that PyTorch takes instead.
"""

import math
from typing import Any

import numpy as np

from .._jit import cpu_inline, cpu_kernel, prange
from ._lp_pool_rules import sign, window_max

__all__ = ["lp_pool2d_forward", "lp_pool2d_backward_input"]

# The shared rules, inlined at Numba's IR level as the helpers of hot CPU loops here are.
_sign, _window_max = cpu_inline(sign), cpu_inline(window_max)


@cpu_inline
def _pow(v, e, one):
    # PyTorch's: small integer powers multiplied out (exact where pow may be an ulp off), and
    # a square root for 0.5 (NaN for -inf, -0 for -0, where pow gives inf and 0). The
    # constants are built from ``one``, of v's type: a bare 2 would compare in float64.
    two = one + one
    if e == two:
        return v * v
    if e == one:
        return v
    if e == two + one:
        return v * v * v
    if e == one / two:
        return np.sqrt(v)
    return v ** e


@cpu_kernel
def _forward_power(x, geometry, powers, y, c):
    R, S, sh, sw = geometry
    p, _, inv, _ = powers
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    zero, one, size = x.dtype.type(0), x.dtype.type(1), x.dtype.type(R * S)
    for nc in prange(N * C):
        n, ch = nc // C, nc % C
        for i in range(P):
            h0, h1 = i * sh, min(i * sh + R, H)
            for j in range(Q):
                w0, w1 = j * sw, min(j * sw + S, W)
                acc = zero
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += _pow(x[n, ch, h, w], p, one)
                # avg_pool2d's mean (a ceil-mode window past the input divides by what is
                # left of it), then sign(a) * relu(|a|): a itself, with -0 made +0.
                cc = (acc / x.dtype.type((h1 - h0) * (w1 - w0)) + zero) * size
                c[n, ch, i, j] = cc
                y[n, ch, i, j] = _pow(cc, inv, one)


@cpu_kernel
def _forward_max(x, geometry, sign, y, c):
    N, C = x.shape[0], x.shape[1]
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, ch = nc // C, nc % C
        for i in range(P):
            for j in range(Q):
                best, _ = _window_max(x, n, ch, i, j, geometry, sign)
                y[n, ch, i, j] = sign * best
                c[n, ch, i, j] = sign * best


def lp_pool2d_forward(x: Any, geometry: tuple, powers: tuple, y: Any, c: Any) -> None:
    if math.isinf(powers[0]):
        sign = powers[0].dtype.type(1 if powers[0] > 0 else -1)  # in the arrays' dtype
        _forward_max(x, geometry, sign, y, c)
    else:
        _forward_power(x, geometry, powers, y, c)


@cpu_kernel
def _backward_power(x, c, gy, geometry, powers, gx):
    R, S, sh, sw = geometry
    p, pm1, inv, invm1 = powers
    N, C, H, W = x.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero, one, size = x.dtype.type(0), x.dtype.type(1), x.dtype.type(R * S)
    # Overlapping windows share inputs: each iteration owns a whole (n, c) plane, so the
    # scatter below never races.
    for nc in prange(N * C):
        n, ch = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, ch, h, w] = zero
        for i in range(P):
            h0, h1 = i * sh, min(i * sh + R, H)
            for j in range(Q):
                w0, w1 = j * sw, min(j * sw + S, W)
                cc = c[n, ch, i, j]
                # Back through c^(1/p), the scale R * S, then sign(a) * relu(|a|): relu
                # passes nothing where a = 0 (c = 0), and sign(NaN) = 0 in the product.
                g = gy[n, ch, i, j] * (inv * _pow(cc, invm1, one)) * size
                s = _sign(cc, one)
                g = g * s * s if cc != zero else zero
                g = g / x.dtype.type((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        gx[n, ch, h, w] += g
        # Then through x^p, after the sum over windows, as PyTorch's chain does.
        for h in range(H):
            for w in range(W):
                gx[n, ch, h, w] = gx[n, ch, h, w] * (p * _pow(x[n, ch, h, w], pm1, one))


@cpu_kernel
def _backward_max(x, gy, geometry, sign, gx):
    N, C, H, W = x.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for nc in prange(N * C):
        n, ch = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, ch, h, w] = zero
        for i in range(P):
            for j in range(Q):
                _, at = _window_max(x, n, ch, i, j, geometry, sign)
                if at >= 0:
                    gx[n, ch, at // W, at % W] += gy[n, ch, i, j]
        # |x|'s gradient: times sign(x) (0 at 0 and NaN), after the sum over windows.
        for h in range(H):
            for w in range(W):
                gx[n, ch, h, w] = gx[n, ch, h, w] * _sign(x[n, ch, h, w], one)


def lp_pool2d_backward_input(x: Any, c: Any, gy: Any, geometry: tuple, powers: tuple, gx: Any) -> None:
    if math.isinf(powers[0]):
        sign = powers[0].dtype.type(1 if powers[0] > 0 else -1)
        _backward_max(x, gy, geometry, sign, gx)
    else:
        _backward_power(x, c, gy, geometry, powers, gx)
