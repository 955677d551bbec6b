"""conv2d on CUDA through column matrices and cuBLAS (numbacnn/_cublas.py; the default on a GPU).

Per group g, with I = N * P * Q output pixels and J = C/G * R * S taps:
  forward   cols[g] (J, I) = im2col(x);  yt[g rows] (K/G, I) = w_g (K/G, J) @ cols[g];  y = yt + b
  backward  gyt (K, I) = gy regrouped;   gw_g += gyt[g rows] @ cols[g]^T;  gb += sum of gy
            gcols[g] = w_g^T @ gyt[g rows];  gx = col2im(gcols)  (a gather: no atomics)
The forward's column matrix is kept for the backward when one follows. The products name their
operands as ``Rows`` of the arrays (a group's weights, columns and product rows) rather than
numba views, which cost the host 10-20 us each.
"""

from numba import cuda

from .._cublas import Rows, gemm
from .._jit import cuda_kernel

__all__ = ["forward", "backward"]

THREADS = 256
MAX_ROWS = 65535  # the grid's y extent; the kernels stride over more rows than that


def _grid(n, rows):
    """(blocks along the pixels, blocks along the rows): y strides when rows exceed MAX_ROWS."""
    return (n + THREADS - 1) // THREADS, min(rows, MAX_ROWS)


# Every kernel here runs a 2-D grid: x along the contiguous pixel axis, y over (sample or group,
# channel) rows, so each thread splits its index with at most two divisions and then loops over
# the taps. One thread per element with the index split per element took 76 us for network3's
# two column matrices (2.9M elements) on an H200, far below memory speed: the ten 64-bit
# divisions per element are the likely bound.
@cuda_kernel
def _im2col_kernel(x, cols, P, Q, R, S, sh, sw, dh, dw, pt, pl):
    # cols[g, (c, r, s), (n, p, q)] = x[n, g * Cg + c, p*sh + r*dh - pt, q*sw + s*dw - pl], 0 outside;
    # y: the input channel gc = g * Cg + c, each thread every (r, s) of one output pixel.
    N, C, H, W = x.shape
    I = cols.shape[2]
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i >= I:
        return
    Cg = C // cols.shape[0]
    n = i // (P * Q)
    pq = i - n * (P * Q)
    p = pq // Q
    q = pq - p * Q
    zero = x.dtype.type(0)
    for gc in range(cuda.blockIdx.y, C, cuda.gridDim.y):
        g = gc // Cg
        row = (gc - g * Cg) * R * S
        for r in range(R):
            h = p * sh + r * dh - pt
            for s in range(S):
                w = q * sw + s * dw - pl
                v = zero
                if h >= 0 and h < H and w >= 0 and w < W:
                    v = x[n, gc, h, w]
                cols[g, row + r * S + s, i] = v


@cuda_kernel
def _regroup_kernel(mat, b, a, to_images):
    # to_images: a[n, k, p, q] = mat[k, (n, p, q)] (+ b[k]), the forward's output; else
    # mat[k, (n, p, q)] = a[n, k, p, q], the backward's gy as a matrix. y: (n, k)
    N, K, P, Q = a.shape
    pq = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if pq >= P * Q:
        return
    p = pq // Q
    q = pq - p * Q
    for nk in range(cuda.blockIdx.y, N * K, cuda.gridDim.y):
        n = nk // K
        k = nk - n * K
        if to_images:
            v = mat[k, n * P * Q + pq]
            a[n, k, p, q] = v + b[k] if b.size else v
        else:
            mat[k, n * P * Q + pq] = a[n, k, p, q]


@cuda_kernel
def _col2im_kernel(gcols, gx, P, Q, R, S, sh, sw, dh, dw, pt, pl):
    # gx[n, c, h, w] = the sum, over the taps (r, s) whose output (p, q) reads x[n, c, h, w], of
    # gcols[g, (c, r, s), (n, p, q)]; y: (n, c). Stride 1 (the common case) needs no division.
    N, C, H, W = gx.shape
    hw = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if hw >= H * W:
        return
    h = hw // W
    w = hw - h * W
    Cg = C // gcols.shape[0]
    for nc in range(cuda.blockIdx.y, N * C, cuda.gridDim.y):
        n = nc // C
        c = nc - n * C
        g = c // Cg
        row = (c - g * Cg) * R * S
        acc = gx.dtype.type(0)
        for r in range(R):
            hp = h + pt - r * dh
            p = hp
            if sh != 1:
                p = hp // sh if hp >= 0 and hp % sh == 0 else -1
            if p >= 0 and p < P:
                for s in range(S):
                    wq = w + pl - s * dw
                    q = wq
                    if sw != 1:
                        q = wq // sw if wq >= 0 and wq % sw == 0 else -1
                    if q >= 0 and q < Q:
                        acc += gcols[g, row + r * S + s, (n * P + p) * Q + q]
        gx[n, c, h, w] = acc


_NO_BIAS: dict = {}


def _no_bias(dtype):
    """An empty device array of ``dtype``, made once: the bias argument of the backward's regroup."""
    if dtype not in _NO_BIAS:
        _NO_BIAS[dtype] = cuda.device_array((0,), dtype)
    return _NO_BIAS[dtype]


def forward(x, w, b, y, geo, cols, yt) -> None:
    """y = conv2d(x, w) + b (b empty: no bias); ``cols`` (G, J, I) and ``yt`` (K, I) scratch,
    ``cols`` left holding x's column matrices for the backward."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = y.shape
    if y.size == 0:  # an empty batch: a grid of no blocks is an error on a GPU
        return
    _im2col_kernel[_grid(cols.shape[2], x.shape[1]), THREADS](x, cols, P, Q, R, S, sh, sw, dh, dw, pt, pl)
    _, J, I = cols.shape
    Kg = K // G
    for g in range(G):
        gemm(Rows(w, g * Kg, (g + 1) * Kg, J), Rows(cols, g * J, (g + 1) * J, I), Rows(yt, g * Kg, (g + 1) * Kg, I))
    _regroup_kernel[_grid(P * Q, N * K), THREADS](yt, b, y, True)


def backward(w, gy, gw, gx, geo, cols, gyt, gcols) -> None:
    """gw += the weight gradient from ``cols`` (the forward's column matrices); gx = the input
    gradient (None: not wanted); ``gyt`` (K, I) and ``gcols`` (G, J, I) scratch. The bias
    gradient is the caller's."""
    G, R, S, sh, sw, dh, dw, pt, pl = geo
    N, K, P, Q = gy.shape
    if gy.size == 0:
        return
    _regroup_kernel[_grid(P * Q, N * K), THREADS](gyt, _no_bias(gy.dtype), gy, False)
    _, J, I = cols.shape
    Kg = K // G
    for g in range(G):
        gemm(Rows(gyt, g * Kg, (g + 1) * Kg, I), Rows(cols, g * J, (g + 1) * J, I), Rows(gw, g * Kg, (g + 1) * Kg, J),
             trans_b=True, beta=1.0)
    if gx is None:
        return
    for g in range(G):
        gemm(Rows(w, g * Kg, (g + 1) * Kg, J), Rows(gyt, g * Kg, (g + 1) * Kg, I), Rows(gcols, g * J, (g + 1) * J, I),
             trans_a=True)
    _col2im_kernel[_grid(gx.shape[2] * gx.shape[3], gx.shape[0] * gx.shape[1]), THREADS](
        gcols, gx, P, Q, R, S, sh, sw, dh, dw, pt, pl)
