"""max_pool2d CPU kernels: (N, C, H, W) arrays, parallel over the N*C planes.

``geometry`` is (R, S, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w).
"""

import numpy as np

from .._jit import cpu_kernel, prange


@cpu_kernel
def max_pool2d_forward(x, geometry, y, index):
    R, S, sh, sw, ph, pw, dh, dw = geometry
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    lowest = x.dtype.type(-np.inf)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        if ph == 0 and pw == 0 and R == 2 and S == 2 and dh == 1 and dw == 1:
            # The common 2x2 unpadded window, always inside x: same visiting order and
            # comparisons as below, without the bounds checks and inner loops.
            for p in range(P):
                for q in range(Q):
                    h, w = p * sh, q * sw
                    best, at = lowest, -1
                    for v, i in ((x[n, c, h, w], h * W + w), (x[n, c, h, w + 1], h * W + w + 1),
                                 (x[n, c, h + 1, w], (h + 1) * W + w), (x[n, c, h + 1, w + 1], (h + 1) * W + w + 1)):
                        if v > best or v != v:
                            best, at = v, i
                    y[n, c, p, q] = best
                    index[n, c, p, q] = at
            continue
        for p in range(P):
            for q in range(Q):
                best = lowest
                at = -1
                for r in range(R):
                    h = p * sh - ph + r * dh
                    if h < 0 or h >= H:
                        continue
                    for s in range(S):
                        w = q * sw - pw + s * dw
                        if w < 0 or w >= W:
                            continue
                        v = x[n, c, h, w]
                        # Strict '>' keeps the first maximum on ties; NaN wins, as in PyTorch.
                        if v > best or v != v:
                            best = v
                            at = h * W + w
                y[n, c, p, q] = best
                index[n, c, p, q] = at


@cpu_kernel
def max_pool2d_backward_input(gy, index, geometry, gx):
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero = gx.dtype.type(0)
    # Overlapping windows can route two outputs to one input: each iteration owns a whole
    # (n, c) plane, so the scatter below never races.
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        for p in range(P):
            for q in range(Q):
                at = index[n, c, p, q]
                if at >= 0:
                    gx[n, c, at // W, at % W] += gy[n, c, p, q]
