"""conv2d CPU: the copies and sums its pixel-major and Winograd kernels share (inlined).

Padded HWC images: each sample becomes a zero-padded (H, W, C) image whose pixel rows hold
contiguous channels (conv2d_cpu's pixel-major path and conv2d_winograd_cpu read them), and
the input gradient comes back from the same layout.
"""

from __future__ import annotations

import numpy as np

from .._jit import cpu_inline

__all__ = ["to_hwc", "from_hwc", "bias_sum"]


@cpu_inline
def to_hwc(xn, xp, pt, pl):
    """xp[pt + h, pl + w, c] = xn[c, h, w]; the rest of xp (the padding) = 0."""
    C, H, W = xn.shape
    Hp, Wp, _ = xp.shape
    zero = xn.dtype.type(0)
    xf = xp.reshape(xp.size)
    for i in range(Hp):
        for j in range(Wp):
            if i < pt or i >= pt + H or j < pl or j >= pl + W:
                o = np.uint64((i * Wp + j) * C)
                for c in range(C):
                    xf[o + np.uint64(c)] = zero
    for h in range(H):
        for w in range(W):
            o = np.uint64(((h + pt) * Wp + w + pl) * C)
            for c in range(C):
                xf[o + np.uint64(c)] = xn[c, h, w]


@cpu_inline
def from_hwc(xp, xn, pt, pl):
    """xn[c, h, w] = xp[pt + h, pl + w, c]: the transpose of to_hwc (padding dropped). Runs of
    16 columns at a time, every channel, keep the HWC lines read in L1 (1.6x faster than
    a channel at a time, measured)."""
    C, H, W = xn.shape
    for h in range(H):
        for w0 in range(0, W, 16):
            for c in range(C):
                for w in range(w0, min(W, w0 + 16)):
                    xn[c, h, w] = xp[h + pt, w + pl, c]


@cpu_inline
def bias_sum(gy3, k):
    """The sum of gy3[:, k, :] (a bias gradient; a caller's REASSOC lets it run in lanes)."""
    acc = gy3.dtype.type(0)
    for n in range(gy3.shape[0]):
        for i in range(gy3.shape[2]):
            acc += gy3[n, k, i]
    return acc
