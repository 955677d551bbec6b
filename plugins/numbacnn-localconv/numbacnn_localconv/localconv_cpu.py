"""localconv CPU kernels. x (N, C, H, W), weight (P, Q, K, C, R, S), bias (K, P, Q), y (N, K, P, Q).

The interface, the same in localconv_cuda.py, each with the geometry (sh, sw, pt, pl) last:
``localconv_forward(x, w, b, y, ...)``, ``localconv_backward_input(gy, w, gx, ...)`` (gx
written) and ``localconv_backward_weight(x, gy, gw, gb, ...)`` (added into gw and gb). Without
a bias, ``b`` and ``gb`` are empty (0, 0, 0) arrays.
"""

from numbacnn.kernels import cpu_kernel, prange

__all__ = ["localconv_forward", "localconv_backward_input", "localconv_backward_weight"]


@cpu_kernel
def localconv_forward(x, w, b, y, sh, sw, pt, pl):
    N, C, H, W = x.shape
    P, Q, K, _, R, S = w.shape
    zero = x.dtype.type(0)
    for nk in prange(N * K):
        n, k = nk // K, nk % K
        for p in range(P):
            for q in range(Q):
                acc = b[k, p, q] if b.size else zero
                for c in range(C):
                    for r in range(R):
                        h = p * sh + r - pt
                        if 0 <= h < H:
                            for s in range(S):
                                v = q * sw + s - pl
                                if 0 <= v < W:
                                    acc += w[p, q, k, c, r, s] * x[n, c, h, v]
                y[n, k, p, q] = acc


@cpu_kernel
def localconv_backward_input(gy, w, gx, sh, sw, pt, pl):
    # One thread per (n, c) plane of gx: it zeroes the plane, then its scatter-adds never
    # collide with another thread's.
    N, C, H, W = gx.shape
    P, Q, K, _, R, S = w.shape
    zero = gx.dtype.type(0)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            for v in range(W):
                gx[n, c, h, v] = zero
        for p in range(P):
            for q in range(Q):
                for k in range(K):
                    g = gy[n, k, p, q]
                    for r in range(R):
                        h = p * sh + r - pt
                        if 0 <= h < H:
                            for s in range(S):
                                v = q * sw + s - pl
                                if 0 <= v < W:
                                    gx[n, c, h, v] += w[p, q, k, c, r, s] * g


@cpu_kernel
def localconv_backward_weight(x, gy, gw, gb, sh, sw, pt, pl):
    # One thread per output position (p, q): it alone owns gw[p, q] and gb[:, p, q]. A tap
    # on the padding reads a zero, and g * 0 keeps a NaN or Inf of gy, as the formula with
    # a zero-padded x (PyTorch's unfold, its native convolution) does.
    N, C, H, W = x.shape
    P, Q, K, _, R, S = gw.shape
    zero = x.dtype.type(0)
    for pq in prange(P * Q):
        p, q = pq // Q, pq % Q
        for n in range(N):
            for k in range(K):
                g = gy[n, k, p, q]
                if gb.size:
                    gb[k, p, q] += g
                for c in range(C):
                    for r in range(R):
                        h = p * sh + r - pt
                        for s in range(S):
                            v = q * sw + s - pl
                            xv = x[n, c, h, v] if 0 <= h < H and 0 <= v < W else zero
                            gw[p, q, k, c, r, s] += g * xv
