"""Window rules that the max_pool3d and avg_pool3d kernels share between CPU and CUDA.

Each is a ``jitable`` helper (see numbacnn/_jit.py): written once, compiled into the CPU
kernels and into their CUDA twins alike, so the two devices cannot drift apart on which taps
a window holds, which element wins a max, or what an average divides by.
"""

import math

from .._jit import jitable

__all__ = ["window", "divisor", "window_max"]


@jitable
def window(p, size, k, stride, pad):
    """Window p's input rows [lo, hi) and its length clipped to the padded input only."""
    start = p * stride - pad
    end = min(start + k, size + pad)
    return max(start, 0), min(end, size), end - start


@jitable
def divisor(d0, d1, padded_d, h0, h1, padded_h, w0, w1, padded_w, include_pad, override):
    """What an average window divides by: the override, the padded window's size, or the
    count of its taps inside the input (PyTorch's count_include_pad / divisor_override)."""
    if override > 0:
        return override
    if include_pad:
        return padded_d * padded_h * padded_w
    return (d1 - d0) * (h1 - h0) * (w1 - w0)


@jitable
def window_max(x, n, c, od, p, q, geometry):
    """The maximum of output (od, p, q)'s window in volume (n, c) of x, and its flat in-volume
    index (-1: a window of padding alone). Taps outside x are skipped. ``geometry`` is
    max_pool3d's (T, R, S, strides, pads, dilations)."""
    T, R, S, sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry
    D, H, W = x.shape[2], x.shape[3], x.shape[4]
    best = -x.dtype.type(math.inf)  # the float32 constant negated, not a float64 -inf cast
    at = -1
    for t in range(T):
        d = od * sd - pd + t * dd
        if d < 0 or d >= D:
            continue
        for r in range(R):
            h = p * sh - ph + r * dh
            if h < 0 or h >= H:
                continue
            for s in range(S):
                w = q * sw - pw + s * dw
                if w < 0 or w >= W:
                    continue
                v = x[n, c, d, h, w]
                # As in PyTorch: strict '>' keeps the first maximum on ties, the last NaN
                # wins, and a window of -inf alone picks its first element.
                if at < 0 or v > best or v != v:
                    best = v
                    at = (d * H + h) * W + w
    return best, at
