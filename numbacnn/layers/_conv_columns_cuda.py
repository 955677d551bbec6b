"""conv2d on CUDA through column matrices and cuBLAS (``NUMBACNN_CUBLAS=1``, numbacnn/_cublas.py).

Per group g, with I = N * P * Q output pixels and J = C/G * R * S taps:
  forward   cols[g] (J, I) = im2col(x);  yt[g rows] (K/G, I) = w_g (K/G, J) @ cols[g];  y = yt + b
  backward  gyt (K, I) = gy regrouped;   gw_g += gyt[g rows] @ cols[g]^T;  gb += sum of gy
            gcols[g] = w_g^T @ gyt[g rows];  gx = col2im(gcols)  (a gather: no atomics)
The forward's column matrix is kept for the backward when one follows. One thread per element
in every kernel here, threads running along the contiguous pixel axis.
"""

from numba import cuda

from .._cublas import gemm
from .._jit import cuda_kernel

__all__ = ["forward", "backward"]

THREADS = 256


def _grid(n):
    return (n + THREADS - 1) // THREADS


@cuda_kernel
def _im2col_kernel(x, cols, P, Q, R, S, sh, sw, dh, dw, pt, pl):
    # cols[g, (c, r, s), (n, p, q)] = x[n, g * Cg + c, p*sh + r*dh - pt, q*sw + s*dw - pl], 0 outside.
    t = cuda.grid(1)
    G, J, I = cols.shape
    if t < G * J * I:
        N, C, H, W = x.shape
        i, j, g = t % I, t // I % J, t // (I * J)
        n, p, q = i // (P * Q), i // Q % P, i % Q
        h = p * sh + j // S % R * dh - pt
        w = q * sw + j % S * dw - pl
        v = x.dtype.type(0)
        if h >= 0 and h < H and w >= 0 and w < W:
            v = x[n, g * (C // G) + j // (R * S), h, w]
        cols[g, j, i] = v


@cuda_kernel
def _to_output_kernel(yt, b, y):
    # y[n, k, p, q] = yt[k, (n, p, q)] (+ b[k])
    t = cuda.grid(1)
    N, K, P, Q = y.shape
    if t < N * K * P * Q:
        pq, k, n = t % (P * Q), t // (P * Q) % K, t // (P * Q * K)
        v = yt[k, n * P * Q + pq]
        y[n, k, pq // Q, pq % Q] = v + b[k] if b.size else v


@cuda_kernel
def _to_columns_kernel(gy, gyt):
    # gyt[k, (n, p, q)] = gy[n, k, p, q]
    t = cuda.grid(1)
    N, K, P, Q = gy.shape
    if t < N * K * P * Q:
        pq, k, n = t % (P * Q), t // (P * Q) % K, t // (P * Q * K)
        gyt[k, n * P * Q + pq] = gy[n, k, pq // Q, pq % Q]


@cuda_kernel
def _col2im_kernel(gcols, gx, P, Q, R, S, sh, sw, dh, dw, pt, pl):
    # gx[n, c, h, w] = the sum, over the taps (r, s) whose output (p, q) reads x[n, c, h, w], of
    # gcols[g, (c, r, s), (n, p, q)]
    t = cuda.grid(1)
    N, C, H, W = gx.shape
    if t < N * C * H * W:
        w, h, c, n = t % W, t // W % H, t // (H * W) % C, t // (C * H * W)
        Cg = C // gcols.shape[0]
        g, cg = c // Cg, c % Cg
        acc = gx.dtype.type(0)
        for r in range(R):
            hp = h + pt - r * dh
            if hp >= 0 and hp % sh == 0 and hp // sh < P:
                for s in range(S):
                    wq = w + pl - s * dw
                    if wq >= 0 and wq % sw == 0 and wq // sw < Q:
                        acc += gcols[g, (cg * R + r) * S + s, (n * P + hp // sh) * Q + wq // sw]
        gx[n, c, h, w] = acc


def forward(x, w, b, y, geo, cols, yt) -> None:
    """y = conv2d(x, w) + b (b empty: no bias); ``cols`` (G, J, I) and ``yt`` (K, I) scratch,
    ``cols`` left holding x's column matrices for the backward."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = y.shape
    _im2col_kernel[_grid(cols.size), THREADS](x, cols, P, Q, R, S, sh, sw, dh, dw, pt, pl)
    w2, Kg = w.reshape(K, w.size // K), K // G
    for g in range(G):
        gemm(w2[g * Kg:(g + 1) * Kg], cols[g], yt[g * Kg:(g + 1) * Kg])
    _to_output_kernel[_grid(y.size), THREADS](yt, b, y)


def backward(w, gy, gw, gx, geo, cols, gyt, gcols) -> None:
    """gw += the weight gradient from ``cols`` (the forward's column matrices); gx = the input
    gradient (None: not wanted); ``gyt`` (K, I) and ``gcols`` (G, J, I) scratch. The bias
    gradient is the caller's."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = gy.shape
    _to_columns_kernel[_grid(gy.size), THREADS](gy, gyt)
    Kg = K // G
    gw2 = gw.reshape(K, gw.size // K)
    for g in range(G):
        gemm(gyt[g * Kg:(g + 1) * Kg], cols[g], gw2[g * Kg:(g + 1) * Kg], trans_b=True, beta=1.0)
    if gx is None:
        return
    w2 = w.reshape(K, w.size // K)
    for g in range(G):
        gemm(w2[g * Kg:(g + 1) * Kg], gyt[g * Kg:(g + 1) * Kg], gcols[g], trans_a=True)
    _col2im_kernel[_grid(gx.size), THREADS](gcols, gx, P, Q, R, S, sh, sw, dh, dw, pt, pl)
