"""conv2d CPU's shifted-taps path ("shift", conv2d_plan): a direct convolution for few output
channels at stride 1, groups 1, where im2col's product has too few rows for BLAS (lenet5's
conv1: 1 -> 6 channels, 5x5).

Each sample is copied into a zero-padded image xp (C, Hp, Wp) and every output is computed on
the padded-width grid, o = p * Wp + q: tap (c, r, s) of every output is then one flat input
offset away, xp[c * Hp * Wp + r * dh * Wp + s * dw + o], so each tap (each row of taps at
dilation 1) is one long contiguous pass over the grid, which vectorises, into an accumulator
row in L1; the grid's Wp - Q extra columns per row are computed and dropped. The last grid
index read is C * Hp * Wp - 1 (o < (P - 1) * Wp + Q, Hp = P + dh * (R - 1), Wp = Q + dw * (S - 1)).

Measured against the path each shape took before (the node's forward with relu, 2 threads,
one process, medians, us): batch 256, 1 -> 6 5x5 pad 2 at 28x28 1157 -> 803 (im2col), at 8x8
199 -> 126; 4 -> 8 5x5 pad 2 at 16x16 2093 -> 1405 (pixel-major); 3 -> 8 3x3 pad 1 at 8x8
197 -> 164; level at 8 output channels (1 -> 8 at 28x28 1127 / 1069); lost from 12 (1 -> 12
1302 / 1557, 1 -> 16 1533 / 2064, 3 -> 32 3x3 at 32x32 3328 / 7504). Batch 1, lenet5's conv1
in the model's one-thread replay: 14.6 -> 9.4 (its conv2, 6 -> 16, stayed pixel-major: 16.7
against 17.2). The default takes it in batch-1 inference only (conv2d_plan.SHIFT_MAX_OUT_CHANNELS:
the batch-256 gains above cost a cold ``numbacnn train`` its first evaluation's compile); a
training step keeps im2col's forward and backward (a forced "shift" forward is followed by
im2col's backward).
"""

import numpy as np

from .._jit import cpu_kernel, cpu_serial, prange

__all__ = ["shift_forward"]


@cpu_serial
def _shift_chunk(x, w, b, y, xp, n0, n1, pt, pl, dh, dw, relu):
    """Samples n0..n1 through this chunk's padded image xp (C, Hp, Wp); b empty: no bias;
    ``relu``: relu's rule as y is written. The accumulator row is allocated here: LLVM then
    knows it overlaps no other array and vectorises the passes without overlap checks (as
    scratch passed in, the same kernel ran 1.5x slower: 1.11 against 0.74 ms for lenet5's conv1
    at batch 256)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    R, S = w.shape[2], w.shape[3]
    Hp, Wp = xp.shape[1], xp.shape[2]
    L = (P - 1) * Wp + Q  # the grid's outputs
    acc = np.empty(L, y.dtype)
    zero = y.dtype.type(0)
    xf, wf, yf, pf = x.reshape(x.size), w.reshape(w.size), y.reshape(y.size), xp.reshape(xp.size)
    for i in range(pf.size):  # the border stays zero: only the interior is written below
        pf[i] = zero
    one = np.uint64(1)
    for n in range(n0, n1):
        for c in range(C):
            for h in range(H):  # Hp = pt + H + the trailing pad at stride 1: every row fits
                src, dst = np.uint64(((n * C + c) * H + h) * W), np.uint64((c * Hp + h + pt) * Wp + pl)
                for v in range(W):
                    pf[dst + np.uint64(v)] = xf[src + np.uint64(v)]
        for k in range(K):
            bk = b[k] if b.size else zero
            for o in range(L):
                acc[o] = bk
            for c in range(C):
                for r in range(R):
                    base = np.uint64((c * Hp + r * dh) * Wp)
                    wb = np.uint64(((k * C + c) * R + r) * S)
                    if dw == 1 and S == 5:  # a row of taps in one pass: one load and store of acc
                        w0, w1, w2, w3, w4 = wf[wb], wf[wb + one], wf[wb + np.uint64(2)], wf[wb + np.uint64(3)], \
                            wf[wb + np.uint64(4)]
                        for o in range(L):
                            i = base + np.uint64(o)
                            acc[o] += (((w0 * pf[i] + w1 * pf[i + one]) + w2 * pf[i + np.uint64(2)])
                                       + w3 * pf[i + np.uint64(3)]) + w4 * pf[i + np.uint64(4)]
                    else:
                        for s in range(S):
                            ws, at = wf[wb + np.uint64(s)], base + np.uint64(s * dw)
                            for o in range(L):
                                acc[o] += ws * pf[at + np.uint64(o)]
            for p in range(P):
                out, a = np.uint64(((n * K + k) * P + p) * Q), np.uint64(p * Wp)
                for q in range(Q):
                    v = acc[a + np.uint64(q)]
                    yf[out + np.uint64(q)] = zero if relu and v <= zero else v


@cpu_kernel
def _shift_batch(x, w, b, y, xp, pt, pl, dh, dw, relu):
    """The batch in xp.shape[0] chunks of samples, each with its own padded image xp[t]."""
    N, T = x.shape[0], xp.shape[0]
    for t in prange(T):
        _shift_chunk(x, w, b, y, xp[t], t * N // T, (t + 1) * N // T, pt, pl, dh, dw, relu)


def shift_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray, xp: np.ndarray, geo: tuple,
                  relu: bool = False) -> None:
    """y = conv2d(x, w) + b (b empty: no bias), relu'd when ``relu``, for groups 1 at stride 1.
    Scratch: ``xp`` (T, C, P + dh*(R-1), Q + dw*(S-1)), a padded image per chunk of the batch.
    One chunk runs in the calling thread (no parallel region)."""
    pt, pl, dh, dw = geo[7], geo[8], geo[5], geo[6]
    if xp.shape[0] == 1:
        _shift_chunk(x, w, b, y, xp[0], 0, x.shape[0], pt, pl, dh, dw, relu)
    else:
        _shift_batch(x, w, b, y, xp, pt, pl, dh, dw, relu)
