"""avg_pool2d CPU kernels: (N, C, H, W) arrays, parallel over the N*C planes.

``geometry`` is (R, S, stride_h, stride_w, pad_h, pad_w, count_include_pad, divisor_override),
the override 0 when there is none. The interface, the same in avg_pool2d_cuda.py:
``avg_pool2d_forward(x, geometry, y)`` and ``avg_pool2d_backward_input(gy, geometry, gx)``,
each writing all of its output.
"""

from .._jit import cpu_inline, cpu_kernel, prange

__all__ = ["avg_pool2d_forward", "avg_pool2d_backward_input"]


@cpu_inline
def _window(p, size, k, stride, pad):
    """Window p's input rows [lo, hi) and its length clipped to the padded input only."""
    start = p * stride - pad
    end = min(start + k, size + pad)
    return max(start, 0), min(end, size), end - start


@cpu_inline
def _divisor(h0, h1, padded_h, w0, w1, padded_w, include_pad, override):
    if override > 0:
        return override
    if include_pad:
        return padded_h * padded_w
    return (h1 - h0) * (w1 - w0)


@cpu_kernel
def avg_pool2d_forward(x, geometry, y):
    R, S, sh, sw, ph, pw, include_pad, override = geometry
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for p in range(P):
            h0, h1, hp = _window(p, H, R, sh, ph)
            for q in range(Q):
                w0, w1, wp = _window(q, W, S, sw, pw)
                acc = x.dtype.type(0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += x[n, c, h, w]
                div = _divisor(h0, h1, hp, w0, w1, wp, include_pad, override)
                y[n, c, p, q] = acc / x.dtype.type(div)


@cpu_kernel
def avg_pool2d_backward_input(gy, geometry, gx):
    R, S, sh, sw, ph, pw, include_pad, override = geometry
    N, C, H, W = gx.shape
    P, Q = gy.shape[2], gy.shape[3]
    zero = gx.dtype.type(0)
    # Overlapping windows share inputs: each iteration owns a whole (n, c) plane, so the
    # scatter below never races.
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        for p in range(P):
            h0, h1, hp = _window(p, H, R, sh, ph)
            for q in range(Q):
                w0, w1, wp = _window(q, W, S, sw, pw)
                div = _divisor(h0, h1, hp, w0, w1, wp, include_pad, override)
                g = gy[n, c, p, q] / gx.dtype.type(div)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        gx[n, c, h, w] += g
