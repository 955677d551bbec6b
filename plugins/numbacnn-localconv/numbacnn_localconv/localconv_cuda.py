"""localconv CUDA kernels, one output element per thread, each launcher right under its kernel.

x (N, C, H, W), weight (P, Q, K, C, R, S), bias (K, P, Q), y (N, K, P, Q); the interface is
localconv_cpu.py's.
"""

from numbacnn.kernels import cuda, cuda_kernel

__all__ = ["localconv_forward", "localconv_backward_input", "localconv_backward_weight"]

THREADS = 128


def _blocks(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _localconv_forward_kernel(x, w, b, y, sh, sw, pt, pl):
    i = cuda.grid(1)
    if i < y.size:
        N, C, H, W = x.shape
        P, Q, K, _, R, S = w.shape
        q = i % Q
        p = (i // Q) % P
        k = (i // (Q * P)) % K
        n = i // (Q * P * K)
        acc = b[k, p, q] if b.size else y.dtype.type(0)
        for c in range(C):
            for r in range(R):
                h = p * sh + r - pt
                if 0 <= h < H:
                    for s in range(S):
                        v = q * sw + s - pl
                        if 0 <= v < W:
                            acc += w[p, q, k, c, r, s] * x[n, c, h, v]
        y[n, k, p, q] = acc


def localconv_forward(x, w, b, y, sh, sw, pt, pl):
    _localconv_forward_kernel[_blocks(y.size), THREADS](x, w, b, y, sh, sw, pt, pl)


@cuda_kernel
def _localconv_backward_input_kernel(gy, w, gx, sh, sw, pt, pl):
    # A gather: each input element sums over the (p, q, r, s) whose window covers it.
    i = cuda.grid(1)
    if i < gx.size:
        N, C, H, W = gx.shape
        P, Q, K, _, R, S = w.shape
        v0 = i % W
        h0 = (i // W) % H
        c = (i // (W * H)) % C
        n = i // (W * H * C)
        acc = gx.dtype.type(0)
        for r in range(R):
            hp = h0 + pt - r
            if hp >= 0 and hp % sh == 0 and hp // sh < P:
                p = hp // sh
                for s in range(S):
                    vq = v0 + pl - s
                    if vq >= 0 and vq % sw == 0 and vq // sw < Q:
                        q = vq // sw
                        for k in range(K):
                            acc += w[p, q, k, c, r, s] * gy[n, k, p, q]
        gx[n, c, h0, v0] = acc


def localconv_backward_input(gy, w, gx, sh, sw, pt, pl):
    _localconv_backward_input_kernel[_blocks(gx.size), THREADS](gy, w, gx, sh, sw, pt, pl)


@cuda_kernel
def _localconv_backward_weight_kernel(x, gy, gw, sh, sw, pt, pl):
    i = cuda.grid(1)
    if i < gw.size:
        N, C, H, W = x.shape
        P, Q, K, _, R, S = gw.shape
        s = i % S
        r = (i // S) % R
        c = (i // (S * R)) % C
        k = (i // (S * R * C)) % K
        q = (i // (S * R * C * K)) % Q
        p = i // (S * R * C * K * Q)
        h = p * sh + r - pt
        v = q * sw + s - pl
        inside = 0 <= h < H and 0 <= v < W
        zero = gw.dtype.type(0)
        acc = zero
        for n in range(N):
            # A padding tap reads a zero: g * 0 keeps a NaN or Inf of gy (see localconv_cpu).
            acc += gy[n, k, p, q] * (x[n, c, h, v] if inside else zero)
        gw[p, q, k, c, r, s] += acc


@cuda_kernel
def _localconv_backward_bias_kernel(gy, gb):
    i = cuda.grid(1)
    if i < gb.size:
        N, K, P, Q = gy.shape
        q = i % Q
        p = (i // Q) % P
        k = i // (Q * P)
        acc = gb.dtype.type(0)
        for n in range(N):
            acc += gy[n, k, p, q]
        gb[k, p, q] += acc


def localconv_backward_weight(x, gy, gw, gb, sh, sw, pt, pl):
    _localconv_backward_weight_kernel[_blocks(gw.size), THREADS](x, gy, gw, sh, sw, pt, pl)
    if gb.size:  # an empty gb: no bias
        _localconv_backward_bias_kernel[_blocks(gb.size), THREADS](gy, gb)
