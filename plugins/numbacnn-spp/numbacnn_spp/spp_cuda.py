"""spp CUDA kernels, one output element per thread, each launcher right under its kernel.

Layout and interface as in spp_cpu: y and idx (N, F), feature f = offset + c * l * l + i * l + j.
"""

from numbacnn.kernels import cuda, cuda_kernel

__all__ = ["spp_forward", "spp_backward_input"]

THREADS = 128


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _spp_forward_kernel(x, levels, y, idx):
    t = cuda.grid(1)
    if t < y.size:
        N, C, H, W = x.shape
        F = y.shape[1]
        n, f = t // F, t % F
        offset = 0
        for level in levels:
            size = C * level * level
            if offset <= f < offset + size:
                b = f - offset
                c, i, j = b // (level * level), (b // level) % level, b % level
                h0, h1 = (i * H) // level, ((i + 1) * H + level - 1) // level
                w0, w1 = (j * W) // level, ((j + 1) * W + level - 1) // level
                best, where = x[n, c, h0, w0], h0 * W + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = x[n, c, h, w]
                        if v > best or v != v:  # the last NaN wins, as in spp_cpu
                            best, where = v, h * W + w
                y[n, f] = best
                idx[n, f] = where
            offset += size


def spp_forward(x, levels, y, idx):
    _spp_forward_kernel[_blocks(y.size), THREADS](x, levels, y, idx)


@cuda_kernel
def _spp_backward_input_kernel(gy, idx, levels, gx):
    # A gather: each input element sums the output gradients of the bins that cover it and
    # chose it as their maximum (bins of one level may overlap).
    t = cuda.grid(1)
    if t < gx.size:
        N, C, H, W = gx.shape
        w = t % W
        h = (t // W) % H
        c = (t // (W * H)) % C
        n = t // (W * H * C)
        acc = gx.dtype.type(0)
        offset = 0
        for level in levels:
            for i in range(level):
                if (i * H) // level <= h < ((i + 1) * H + level - 1) // level:
                    for j in range(level):
                        if (j * W) // level <= w < ((j + 1) * W + level - 1) // level:
                            f = offset + (c * level + i) * level + j
                            if idx[n, f] == h * W + w:
                                acc += gy[n, f]
            offset += C * level * level
        gx[n, c, h, w] = acc


def spp_backward_input(gy, idx, levels, gx):
    _spp_backward_input_kernel[_blocks(gx.size), THREADS](gy, idx, levels, gx)
