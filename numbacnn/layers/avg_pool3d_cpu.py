"""avg_pool3d CPU kernels: (N, C, D, H, W) arrays, parallel over the N*C volumes. They serve
avg_pool1d and avg_pool2d too, on (N, C, 1, 1, L) and (N, C, 1, H, W) views.

``geometry`` is (T, R, S, stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, count_include_pad,
divisor_override), the override 0 when there is none. The interface, the same in
avg_pool3d_cuda.py: ``avg_pool3d_forward(x, geometry, y)`` and
``avg_pool3d_backward_input(gy, geometry, gx)``, each writing all of its output.
"""

import numpy as np

from .._jit import cpu_inline, cpu_kernel, prange
from ._pool3d_rules import divisor, window

__all__ = ["avg_pool3d_forward", "avg_pool3d_backward_input"]

# The shared rules, inlined at Numba's IR level as every helper of a hot CPU loop here is.
_window, _divisor = cpu_inline(window), cpu_inline(divisor)


# The volumes are read and written through flat views with unsigned offsets: a signed 5-D
# index costs a negative-index check per element (25% slower than this on 2-D shapes, where
# the 5-D indexing alone made these kernels 5-30% slower than the 4-D ones they replaced).
@cpu_kernel
def avg_pool3d_forward(x, geometry, y):
    T, R, S, sd, sh, sw, pd, ph, pw, include_pad, override = geometry
    N, C, D, H, W = x.shape
    Do, P, Q = y.shape[2], y.shape[3], y.shape[4]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        xf, yf = x[n, c].reshape(D * H * W), y[n, c].reshape(Do * P * Q)
        o = 0
        for od in range(Do):
            d0, d1, dp = _window(od, D, T, sd, pd)
            for p in range(P):
                h0, h1, hp = _window(p, H, R, sh, ph)
                for q in range(Q):
                    w0, w1, wp = _window(q, W, S, sw, pw)
                    acc = x.dtype.type(0)
                    for d in range(d0, d1):
                        for h in range(h0, h1):
                            row = (d * H + h) * W
                            for w in range(w0, w1):
                                acc += xf[np.uint64(row + w)]
                    div = _divisor(d0, d1, dp, h0, h1, hp, w0, w1, wp, include_pad, override)
                    yf[o] = acc / x.dtype.type(div)
                    o += 1


@cpu_kernel
def avg_pool3d_backward_input(gy, geometry, gx):
    T, R, S, sd, sh, sw, pd, ph, pw, include_pad, override = geometry
    N, C, D, H, W = gx.shape
    Do, P, Q = gy.shape[2], gy.shape[3], gy.shape[4]
    zero = gx.dtype.type(0)
    # Overlapping windows share inputs: each iteration owns a whole (n, c) volume, so the
    # scatter below never races.
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        gf, gyf = gx[n, c].reshape(D * H * W), gy[n, c].reshape(Do * P * Q)
        for i in range(D * H * W):
            gf[i] = zero
        o = 0
        for od in range(Do):
            d0, d1, dp = _window(od, D, T, sd, pd)
            for p in range(P):
                h0, h1, hp = _window(p, H, R, sh, ph)
                for q in range(Q):
                    w0, w1, wp = _window(q, W, S, sw, pw)
                    div = _divisor(d0, d1, dp, h0, h1, hp, w0, w1, wp, include_pad, override)
                    g = gyf[o] / gx.dtype.type(div)
                    o += 1
                    for d in range(d0, d1):
                        for h in range(h0, h1):
                            row = (d * H + h) * W
                            for w in range(w0, w1):
                                gf[np.uint64(row + w)] += g
