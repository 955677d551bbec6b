"""spp CPU kernels. x (N, C, H, W); y and idx (N, F), F = C * sum(l * l); levels a tuple of ints.

Feature f of level l (after the earlier levels' offset) is channel c, bin (i, j) with
f = offset + c * l * l + i * l + j; idx holds the argmax as h * W + w within its plane. The
interface, the same in spp_cuda.py: ``spp_forward(x, levels, y, idx)`` and
``spp_backward_input(gy, idx, levels, gx)``, each writing all of its outputs.
"""

from numbacnn.kernels import cpu_kernel, prange

__all__ = ["spp_forward", "spp_backward_input"]


@cpu_kernel
def spp_forward(x, levels, y, idx):
    N, C, H, W = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        offset = 0
        for level in levels:
            for i in range(level):
                h0, h1 = (i * H) // level, ((i + 1) * H + level - 1) // level
                for j in range(level):
                    w0, w1 = (j * W) // level, ((j + 1) * W + level - 1) // level
                    best, where = x[n, c, h0, w0], h0 * W + w0
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            v = x[n, c, h, w]
                            # As torch's adaptive_max_pool2d: the last NaN wins (its gradient
                            # goes there); -inf alone keeps the bin's first element.
                            if v > best or v != v:
                                best, where = v, h * W + w
                    f = offset + (c * level + i) * level + j
                    y[n, f] = best
                    idx[n, f] = where
            offset += C * level * level


@cpu_kernel
def spp_backward_input(gy, idx, levels, gx):
    # One thread per (n, c) plane of gx, which it zeroes first: overlapping bins add into
    # the same element, but only within the plane that thread owns.
    N, C, H, W = gx.shape
    zero = gx.dtype.type(0)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for w in range(W):
                gx[n, c, h, w] = zero
        offset = 0
        for level in levels:
            for b in range(level * level):
                f = offset + c * level * level + b
                k = idx[n, f]
                gx[n, c, k // W, k % W] += gy[n, f]
            offset += C * level * level
