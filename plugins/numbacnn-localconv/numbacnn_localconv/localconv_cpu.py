"""localconv CPU kernels. x (N, C, H, W), weight (P, Q, K, C, R, S), bias (K, P, Q), y (N, K, P, Q)."""

from numbacnn._jit import cpu_kernel, prange


@cpu_kernel
def localconv_forward(x, w, b, y, sh, sw, pt, pl):
    N, C, H, W = x.shape
    P, Q, K, _, R, S = w.shape
    for nk in prange(N * K):
        n, k = nk // K, nk % K
        for p in range(P):
            for q in range(Q):
                acc = b[k, p, q]
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
    # One thread per (n, c) plane of gx (zeroed by the caller): scatter-adds never collide.
    N, C, H, W = gx.shape
    P, Q, K, _, R, S = w.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
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
                gb[k, p, q] += g
                for c in range(C):
                    for r in range(R):
                        h = p * sh + r - pt
                        for s in range(S):
                            v = q * sw + s - pl
                            xv = x[n, c, h, v] if 0 <= h < H and 0 <= v < W else zero
                            gw[p, q, k, c, r, s] += g * xv
