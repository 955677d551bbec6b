"""conv2d CPU, the pixel-major path: HWC images, column blocks of output pixels, BLAS products.

conv2d_cpu plans which path a convolution takes (conv2d_plan.cpu_path) and calls this one's
``pixel_forward`` / ``pixel_backward`` with the scratch its plan allocated.
"""

from __future__ import annotations

import numpy as np

from .._blas import gemm
from .._jit import cpu_inline, cpu_kernel, cpu_serial, prange
from .._threads import single_thread_blas
from .conv2d_hwc_cpu import from_hwc, reduce_partials, to_hwc

__all__ = ["pixel_block", "pixel_forward", "pixel_backward"]

Geometry = tuple[int, int, int, int, int, int, int, int, int]

# OpenBLAS multiplies a tall (pixels, C*R*S) matrix by (C*R*S, K) 15-50% faster than the
# short-and-wide (K, C*R*S) @ (C*R*S, pixels) of the path above (K is 32-128 here). So each
# sample is first copied to a zero-padded (H, W, C) image, whose pixel rows hold S*C
# contiguous values per kernel row: a column-matrix row is R contiguous copies. The column
# matrix is built a block of output pixels at a time, sized to stay in L2 next to BLAS's own
# packing buffers; the block's output (pixels, K) goes back to NCHW with the bias added.
# Columns are ordered (r, s, c), so the weights come in as (K, R, S, C) and the weight
# gradient's partials are permuted back by reduce_partials. The forward multiplies by the weights as
# a (R*S*C, K) matrix (wt), the input gradient by them as (K, R*S*C) (wp): each product then
# takes both operands untransposed or one transposed, which OpenBLAS ran 1.2x faster than
# the same product through a transposed weight matrix (64x500 by 500x40: 38 against 31 us).

@cpu_inline
def _rows(xp, cf, Q, geo, la, lb):
    """Rows la..lb of the pixel-major column matrix: cf[l - la, (r*S + s)*C + c] is
    xp[p*sh + r*dh, q*sw + s*dw, c] for l = p*Q + q."""
    _, R, S, sh, sw, dh, dw, _, _ = geo
    Hp, Wp, C = xp.shape
    J = R * S * C
    run = S * C if dw == 1 else C  # contiguous values per copy
    xf = xp.reshape(xp.size)
    for l in range(la, lb):
        p, q = l // Q, l % Q
        for r in range(R):
            for s in range(0, S, S if dw == 1 else 1):
                a = np.uint64(((p * sh + r * dh) * Wp + q * sw + s * dw) * C)
                o = np.uint64((l - la) * J + (r * S + s) * C)
                for i in range(run):
                    cf[o + np.uint64(i)] = xf[a + np.uint64(i)]


@cpu_inline
def _add_rows(xp, cf, Q, geo, la, lb):
    """_rows' transpose: rows la..lb of cf added back into xp (the input gradient). Apart from
    _rows, not a flag of it: each kernel then compiles only the loops it runs (forward 2.24 ->
    2.10 s, backward 2.47 -> 2.32), and the forward's copy ran up to 10% faster (batch 256, 6->16 5x5 at 14x14,
    inference: 1098-1140 against 1212-1229 us). The loops stay written out in both: shared
    through an inlined index helper, both compiled and ran slower (the forward 2.4 against 2.1
    s); made from one template by a closure constant (Numba prunes the other branch), the
    forward ran as slowly as with the flag (1222-1298 against 1109-1130 us)."""
    _, R, S, sh, sw, dh, dw, _, _ = geo
    Hp, Wp, C = xp.shape
    J = R * S * C
    run = S * C if dw == 1 else C
    xf = xp.reshape(xp.size)
    for l in range(la, lb):
        p, q = l // Q, l % Q
        for r in range(R):
            for s in range(0, S, S if dw == 1 else 1):
                a = np.uint64(((p * sh + r * dh) * Wp + q * sw + s * dw) * C)
                o = np.uint64((l - la) * J + (r * S + s) * C)
                for i in range(run):
                    xf[a + np.uint64(i)] += cf[o + np.uint64(i)]


@cpu_inline
def _weights_to(w, dst, rsck):
    """dst = w (K, C, R, S) in column order: (R, S, C, K) when ``rsck``, else (K, R, S, C);
    written in order, read by unsigned flat offsets (the signed, branching index ran 2x
    slower; NumPy's copy of the transposed view took 14-16 us for 40x20x5x5 weights)."""
    K, C, R, S = w.shape
    df, wf = dst.reshape(dst.size), w.reshape(w.size)
    i = np.uint64(0)
    for a in range(R * S if rsck else K):
        for b in range(C if rsck else R * S):
            for e in range(K if rsck else C):
                k, c, rs = (e, b, a) if rsck else (a, e, b)
                df[i] = wf[np.uint64((k * C + c) * R * S + rs)]
                i += np.uint64(1)


@cpu_inline
def _store(yn, ytf, o, b, sc, la, lb, K, relu):
    """yn[k, la:lb] = ytf's rows (from flat offset o, K values each) transposed, times the scale
    sc (empty: none, 1) plus the bias b (empty: none, -0.0: the exact identity), relu'd when
    ``relu`` (NaN kept); the choice outside the loops, each a plain pass."""
    zero, one = yn.dtype.type(0), yn.dtype.type(1)
    for k in range(K):
        bk, sk = b[k] if b.size else -zero, sc[k] if sc.size else one
        if relu:
            for l in range(la, lb):
                v = ytf[np.uint64(o + (l - la) * K + k)] * sk + bk
                yn[k, l] = zero if v <= zero else v
        else:
            for l in range(la, lb):
                yn[k, l] = ytf[np.uint64(o + (l - la) * K + k)] * sk + bk


# Weights of more elements than this go to (R, S, C, K) in blocks of 64 output channels
# (_weights_rsck): written in order, each read a stride of C*R*S away, they took 512->512 3x3's
# 7.9-8.3 ms a call, the blocks 2.3 (NumPy's copy of the transposed view 9.1; /work/probe/s12/wt2.py).
_TRANSPOSE_BLOCKED = 1 << 16


@cpu_inline
def _weights_rsck(wf, df, K, C, RS):
    """df[(rs*C + c)*K + k] = wf[(k*C + c)*RS + rs]: for each block of 64 k, every output row's
    run of them (the block's 64 rows of w read in step, each line used for several c)."""
    for k0 in range(0, K, 64):
        k1 = min(K, k0 + 64)
        for rs in range(RS):
            for c in range(C):
                o, m = np.uint64((rs * C + c) * K), c * RS + rs
                for k in range(k0, k1):
                    df[o + np.uint64(k)] = wf[np.uint64(k * C * RS + m)]


@cpu_serial
def _stacked_weights(w, wt):
    """wt = w in the forward's column order (R, S, C, K), in blocks of 64 output channels where
    the weights are large (_weights_rsck: the stacked forward's, whose rule asks for large weights)."""
    K, C, R, S = w.shape
    if K * C * R * S > _TRANSPOSE_BLOCKED:
        _weights_rsck(w.reshape(w.size), wt.reshape(wt.size), K, C, R * S)
    else:
        _weights_to(w, wt, True)


@cpu_serial
def _pixels_chunk(x, wt, b, sc, xp, colt, yt, y, t, n0, n1, P, Q, geo, relu):
    """Samples n0..n1 of _forward_pixels, chunk t's (its column block colt and product block yt;
    its own padded image xp[t], or each sample's xp[n]). A function of its own, not the
    parallel loop's body: _forward_pixels compiled in 2.37-2.42 s instead of 3.0-3.2 (its
    backward, the same way, 2.20-2.25 against 3.0-3.2), a training step's forward and backward as
    fast (6->16 5x5, 20->40 5x5, 32->64 3x3, three alternated runs, /work/probe/s13/pixt.py)."""
    pt, pl = geo[7], geo[8]
    N, K = y.shape[0], y.shape[1]
    B, J = colt.shape
    L = P * Q
    cf, ytf = colt.reshape(B * J), yt.reshape(B * K)
    for n in range(n0, n1):
        xpn = xp[n] if xp.shape[0] == N else xp[t]
        to_hwc(x[n], xpn, pt, pl)
        for la in range(0, L, B):
            lb = min(L, la + B)
            _rows(xpn, cf, Q, geo, la, lb)
            gemm(False, False, lb - la, K, J, cf, J, wt.reshape(J * K), K, 0, ytf, K)
            _store(y[n].reshape(K, L), ytf, np.int64(0), b, sc, la, lb, K, relu)


@cpu_kernel
def _forward_pixels(x, w, wt, b, sc, xp, colt, yt, y, P, Q, geo, relu):
    """y[n] = conv2d(x[n], w) * sc + b (sc, b empty: none) through pixel-major column blocks;
    scratch wt (R*S*C, K) for the weights, and per chunk t: colt[t] (block rows, R*S*C), yt[t]
    (block rows, K); xp (padded HWC images) has one per chunk, or one per sample (N of them:
    kept for the backward). ``relu``: y = max(y, 0) as relu computes it (NaN kept), as y is written."""
    N = y.shape[0]
    T = colt.shape[0]
    _weights_to(w, wt, True)
    for t in prange(T):
        _pixels_chunk(x, wt, b, sc, xp, colt[t], yt[t], y, np.int64(t), t * N // T, (t + 1) * N // T, P, Q, geo, relu)


@cpu_kernel
def _forward_stacked(x, w, wt, b, sc, xp, colt, yt, y, P, Q, geo, relu):
    """_forward_pixels for inference on planes of fewer pixels than a block (B > P*Q,
    conv2d_plan): B // (P*Q) samples' rows stacked in each product, so one product reads the
    weights for all of them; xp one image per chunk. A kernel of its own, compiled only where a
    model has such a convolution: in _forward_pixels it took that kernel's compile (every
    training step's pixel-major forward) from 2.4 to 2.9 s."""
    pt, pl = geo[7], geo[8]
    N, K = y.shape[0], y.shape[1]
    T, B, J = colt.shape
    L = P * Q
    g = B // L  # samples a product
    _stacked_weights(w, wt)
    for t in prange(T):
        cf, ytf = colt[t].reshape(B * J), yt[t].reshape(B * K)
        n1 = (t + 1) * N // T
        for na in range(t * N // T, n1, g):
            nb = min(n1, na + g)
            for n in range(na, nb):  # each sample's rows under the ones before it
                to_hwc(x[n], xp[t], pt, pl)
                _rows(xp[t], cf[(n - na) * L * J:], Q, geo, 0, L)
            gemm(False, False, (nb - na) * L, K, J, cf, J, wt.reshape(J * K), K, 0, ytf, K)
            for n in range(na, nb):
                _store(y[n].reshape(K, L), ytf, (n - na) * L * K, b, sc, np.int64(0), L, K, relu)


@cpu_serial
def _backward_pixels_chunk(x, wp, gy, xp, gxp, colt, part, gx, t, n0, n1, P, Q, geo, want_gx, build):
    """Samples n0..n1 of _backward_pixels, chunk t's: its column block colt, padded gradient
    image gxp and weight-gradient partial part. A function of its own, as _pixels_chunk."""
    pt, pl = geo[7], geo[8]
    K = gy.shape[1]
    B, J = colt.shape
    L = P * Q
    cf, pf = colt.reshape(B * J), part.reshape(K * J)
    for n in range(n0, n1):
        xpn = xp[t] if build else xp[n]
        if build:
            to_hwc(x[n], xpn, pt, pl)
        if want_gx:
            gxp.reshape(gxp.size)[:] = 0
        gyf = gy[n].reshape(K * L)
        for la in range(0, L, B):
            lb = min(L, la + B)
            _rows(xpn, cf, Q, geo, la, lb)
            # part (+)= gy[n][:, la:lb] @ the column block; the block's column-matrix gradient
            # = gy[n][:, la:lb]^T @ wp, added back into the image
            gemm(False, False, K, J, lb - la, gyf[la:], L, cf, J, 0 if n == n0 and la == 0 else 1, pf, J)
            if want_gx:
                gemm(True, False, lb - la, J, K, gyf[la:], L, wp.reshape(K * J), J, 0, cf, J)
                _add_rows(gxp, cf, Q, geo, la, lb)
        if want_gx:
            from_hwc(gxp, gx[n], pt, pl)


@cpu_kernel
def _backward_pixels(x, w, wp, gy, xp, gxp, colt, part, gx, P, Q, geo, want_gx, build):
    """part[t] = chunk t's weight gradient, columns (r, s, c); gx[n] (when ``want_gx``) =
    the input gradient, gathered in the padded HWC scratch gxp[t] and transposed back, through
    the scratch wp (K, R*S*C) for the weights. xp: the forward's padded HWC images of x, one
    per sample; with ``build``, one per chunk, each sample's made here (a forward on another path)."""
    N = gy.shape[0]
    T = colt.shape[0]
    if want_gx:
        _weights_to(w, wp, False)
    for t in prange(T):
        _backward_pixels_chunk(x, wp, gy, xp, gxp[t], colt[t], part[t], gx, np.int64(t), t * N // T,
                               (t + 1) * N // T, P, Q, geo, want_gx, build)


# Column-matrix block of the pixel-major path: at most this many elements (384 KiB of float32).
_BLOCK_ELEMENTS = 96 * 1024


# Rows of a stacked product (inference, planes of fewer pixels than a block): whole samples up to this.
STACK_ROWS = 128


def pixel_block(L: int, J: int, samples: int = 1) -> int:
    """Output pixels per column-matrix block of the pixel-major path (J = C*R*S columns); with
    ``samples`` (a chunk's, inference) and a plane of fewer pixels than a block, the rows of
    up to that many whole samples, STACK_ROWS at most (``_forward_pixels``)."""
    B = max(1, min(L, _BLOCK_ELEMENTS // J))
    return L * max(1, min(samples, STACK_ROWS // L)) if B == L else B


def pixel_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, xp: np.ndarray,
                  wt: np.ndarray, colt: np.ndarray, yt: np.ndarray, geo: Geometry, relu: bool = False,
                  scale: np.ndarray | None = None) -> None:
    """y = conv2d(x, w) * scale + b (scale None, b empty: none) on the pixel-major path (groups 1),
    relu'd when ``relu``. Scratch: ``xp`` (T or N, padded H, padded W, C; N: kept for the backward),
    ``wt`` (R, S, C, K) for the weights in column order, and per chunk of the batch ``colt`` (T,
    B, C*R*S) and ``yt`` (T, B, K), B = pixel_block(...)."""
    sc = np.empty(0, y.dtype) if scale is None else scale
    P, Q = y.shape[2], y.shape[3]
    kernel = _forward_stacked if colt.shape[1] > P * Q else _forward_pixels
    with single_thread_blas:
        kernel(x, w, wt, b, sc, xp, colt, yt, y, P, Q, geo, relu)


def pixel_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, gw: np.ndarray, gb: np.ndarray,
                   gx: np.ndarray | None, xp: np.ndarray, wp: np.ndarray, gxp: np.ndarray | None,
                   colt: np.ndarray, part: np.ndarray, geo: Geometry, build: bool = False) -> None:
    """The pixel-major backward: gw += the weight gradient, gb += the bias gradient, gx = the
    input gradient (None: not wanted; then ``gxp`` may be None too). ``xp`` (one image per
    sample) as the forward left it, or with ``build`` (T, padded H, padded W, C) scratch the
    backward fills from x itself; scratch ``wp`` (K, R, S, C) for the weights in column
    order, ``gxp`` (T, padded H, padded W, C) and ``part`` (T, K, C*R*S)."""
    N, K, P, Q = gy.shape
    with single_thread_blas:
        _backward_pixels(x, w, wp.reshape(K, -1), gy, xp, xp if gxp is None else gxp, colt, part,
                         x if gx is None else gx, P, Q, geo, gx is not None, build)
        reduce_partials(part, gw.reshape(K, -1), gy.reshape(N, K, P * Q), gb, geo[1] * geo[2])
