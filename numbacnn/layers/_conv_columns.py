"""Column matrices of 2-D convolutions on the CPU (im2col and its transpose, col2im), inlined
into the kernels of conv2d and conv_transpose2d (whose forward is conv2d's input gradient).

The column matrix of a (C, H, W) image for a geometry ``geo`` = (groups, R, S, stride_h,
stride_w, dilation_h, dilation_w, pad_top, pad_left) and a P x Q output has rows (c, r, s) and
columns (p, q): entry ((c, r, s), (p, q)) is the image at (p*sh + r*dh - pt, q*sw + s*dw - pl),
or 0 outside it. P and Q are the caller's: a transposed convolution's output_padding makes
the image larger than the one a convolution with P x Q outputs would need.

With a column stride sw > 1 a column-matrix row reads every sw-th image pixel, a strided copy
that does not vectorise. The ``_phases`` variants work on the image's phase planes instead
(split_phases, merge_phases): plane (a, b) holds the pixels (i*sh + a, j*sw + b), so a row's
copy is contiguous again, and with planes as wide as the column matrix's rows a whole tap's
block is one flat copy (planes of other widths, where a phase is wider, are not supported:
callers take the strided copies there). On conv_transpose2d's stride-2 kernel-4 shape (N16,
16x16 inputs, 32x32x32 outputs; one thread) im2col took 0.55 ms against 0.88, the split
included, and col2im 0.53 against 0.73, the merge and the bias included.
"""

from __future__ import annotations

import numpy as np

from .._jit import cpu_inline

__all__ = ["valid", "im2col", "im2col_rows", "im2col_flat", "col2im", "phase_shape", "split_phases", "merge_phases",
           "im2col_phases", "col2im_phases"]


@cpu_inline
def valid(n_out, size, stride, offset):
    # The outputs i in [lo, hi) whose tap i * stride + offset lands inside [0, size), with
    # lo <= hi <= n_out: callers zero-fill [0, lo) and [hi, n_out) of an n_out-long row, so a
    # tap left of the input for every output (padding wider than n_out strides) must not
    # give lo > n_out.
    lo = 0 if offset >= 0 else min((stride - 1 - offset) // stride, n_out)
    hi = (size - 1 - offset) // stride + 1 if size - 1 - offset >= 0 else 0
    hi = min(hi, n_out)
    return lo, max(lo, hi)


# The copies index flat views with unsigned offsets: a signed index gets a negative-index check
# per element, which stops LLVM from vectorising them (3-4x slower, measured).
@cpu_inline
def im2col(xn, cf, P, Q, geo):
    """cf[((c*R + r)*S + s)*P*Q + p*Q + q] = xn[c, p*sh + r*dh - pt, q*sw + s*dw - pl], or 0."""
    im2col_rows(xn, cf, P, Q, geo, 0, P)


@cpu_inline
def im2col_rows(xn, cf, P, Q, geo, pa, pb):
    """im2col's columns of output rows p in [pa, pb) only (columns pa*Q to pb*Q of every
    row); the other entries of cf are left as they were. One thread's share when a sample's
    output is split."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, H, W = xn.shape
    zero = xn.dtype.type(0)
    xf = xn.reshape(xn.size)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = valid(Q, W, sw, off)
                row = np.uint64(((c * R + r) * S + s) * P * Q)
                for p in range(pa, pb):
                    o = row + np.uint64(p * Q)
                    lo, hi = (q0, q1) if p >= p0 and p < p1 else (Q, Q)  # [lo, hi) copied, rest 0
                    for q in range(lo):
                        cf[o + np.uint64(q)] = zero
                    if hi > lo:
                        src = np.uint64((c * H + p * sh + r * dh - pt) * W + lo * sw + off)
                        dst = o + np.uint64(lo)
                        if sw == 1:  # the common case: a contiguous, vectorised copy
                            for i in range(hi - lo):
                                cf[dst + np.uint64(i)] = xf[src + np.uint64(i)]
                        elif sw == 2:  # a constant stride: LLVM vectorises it as loads and shuffles
                            for i in range(hi - lo):
                                cf[dst + np.uint64(i)] = xf[src + np.uint64(2 * i)]
                        else:
                            for i in range(hi - lo):
                                cf[dst + np.uint64(i)] = xf[src + np.uint64(i * sw)]
                    for q in range(hi, Q):
                        cf[o + np.uint64(q)] = zero


@cpu_inline
def im2col_flat(xn, cf, P, Q, geo):
    """im2col at stride 1 with Q == W ("same" width): x[c] is its own phase plane, Q wide, so
    a tap's rows are one flat copy (_run_copy) instead of a copy per output row. lenet5's conv1
    (1 -> 6, 5x5 at 28x28) at batch 256 took 750-795 us against 1120-1180. Only conv2d_cpu's
    _columns inlines it (its compile 0.85 -> 1.36 s): inside im2col_rows, which every im2col
    kernel inlines, it took _columns to 1.65 s and layers --check conv2d 14.6 -> 17.0 s."""
    _, R, S, _, _, dh, dw, pt, pl = geo
    C, H, W = xn.shape
    xf = xn.reshape(xn.size)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, 1, r * dh - pt)
            for s in range(S):
                q0, q1 = valid(Q, W, 1, s * dw - pl)
                _run_copy(xf, cf, np.uint64(((c * R + r) * S + s) * P * Q), (c * H + r * dh - pt) * W + s * dw - pl,
                          P, Q, p0, p1, q0, q1)


@cpu_inline
def col2im(cf, gxn, P, Q, geo):
    """gxn[c] = the sum of the column-matrix entries that im2col copied from xn[c]."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, H, W = gxn.shape
    gf = gxn.reshape(gxn.size)
    for i in range(gf.size):
        gf[i] = gxn.dtype.type(0)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            for s in range(S):
                off = s * dw - pl
                q0, q1 = valid(Q, W, sw, off)
                if q1 == q0:
                    continue
                row = np.uint64(((c * R + r) * S + s) * P * Q + q0)
                for p in range(p0, p1):
                    o = row + np.uint64(p * Q)
                    dst = np.uint64((c * H + p * sh + r * dh - pt) * W + q0 * sw + off)
                    if sw == 1:
                        for i in range(q1 - q0):
                            gf[dst + np.uint64(i)] += cf[o + np.uint64(i)]
                    else:
                        for i in range(q1 - q0):
                            gf[dst + np.uint64(i * sw)] += cf[o + np.uint64(i)]


def phase_shape(C: int, H: int, W: int, sh: int, sw: int, Q: int) -> tuple[int, int, int, int, int] | None:
    """The phase planes of a (C, H, W) image under strides (sh, sw), for a column matrix of Q
    columns a row: (C, sh, sw, ceil(H/sh), Q), Q wide so that a tap's block is one flat copy
    (the ``_phases`` functions rely on it); None where a phase of the image is wider than Q
    (its rows would not fit) or sw is 1 (the strided copies are contiguous already)."""
    return (C, sh, sw, -(-H // sh), Q) if sw > 1 and -(-W // sw) <= Q else None


@cpu_inline
def split_phases(xn, pn):
    """pn[c, a, b, i, j] = xn[c, i*sh + a, j*sw + b] where that pixel exists; pn's other
    entries are left as they were (im2col_phases zeroes whatever it copies from them)."""
    C, H, W = xn.shape
    _, sh, sw, Hp, Wp = pn.shape
    xf, pf = xn.reshape(xn.size), pn.reshape(pn.size)
    for c in range(C):
        for h in range(H):
            src = np.uint64((c * H + h) * W)
            dst = np.uint64(((c * sh + h % sh) * sw * Hp + h // sh) * Wp)
            if sw == 2:  # a literal stride: LLVM de-interleaves in vector registers
                d1 = dst + np.uint64(Hp * Wp)
                for j in range(W // 2):
                    pf[dst + np.uint64(j)] = xf[src + np.uint64(2 * j)]
                    pf[d1 + np.uint64(j)] = xf[src + np.uint64(2 * j + 1)]
                if W % 2:
                    pf[dst + np.uint64(W // 2)] = xf[src + np.uint64(W - 1)]
            else:
                for b in range(min(sw, W)):
                    db = dst + np.uint64(b * Hp * Wp)
                    for j in range((W - 1 - b) // sw + 1):
                        pf[db + np.uint64(j)] = xf[src + np.uint64(j * sw + b)]


@cpu_inline
def merge_phases(pn, yn, bias):
    """yn[c, h, w] = pn[c, h % sh, w % sw, h // sh, w // sw] + bias[c] (bias empty: none)."""
    C, H, W = yn.shape
    _, sh, sw, Hp, Wp = pn.shape
    yf, pf = yn.reshape(yn.size), pn.reshape(pn.size)
    for c in range(C):
        bc = bias[c] if bias.size else yn.dtype.type(0)
        for h in range(H):
            dst = np.uint64((c * H + h) * W)
            src = np.uint64(((c * sh + h % sh) * sw * Hp + h // sh) * Wp)
            if sw == 2:  # a literal stride: LLVM interleaves in vector registers
                s1 = src + np.uint64(Hp * Wp)
                for j in range(W // 2):
                    yf[dst + np.uint64(2 * j)] = pf[src + np.uint64(j)] + bc
                    yf[dst + np.uint64(2 * j + 1)] = pf[s1 + np.uint64(j)] + bc
                if W % 2:
                    yf[dst + np.uint64(W - 1)] = pf[src + np.uint64(W // 2)] + bc
            else:
                for b in range(min(sw, W)):
                    sb = src + np.uint64(b * Hp * Wp)
                    for j in range((W - 1 - b) // sw + 1):
                        yf[dst + np.uint64(j * sw + b)] = pf[sb + np.uint64(j)] + bc


@cpu_inline
def _phase_tap(off, stride):
    # Image index i*stride + off lies in phase plane off % stride, at plane index i + shift.
    ph = off % stride
    return ph, (off - ph) // stride


@cpu_inline
def im2col_phases(pn, cf, P, Q, H, W, geo):
    """im2col of the (C, H, W) image whose phase planes ``pn`` holds (split_phases); the
    planes are Q wide (phase_shape)."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, _, _, Hp, _ = pn.shape
    pf = pn.reshape(pn.size)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            a, di = _phase_tap(r * dh - pt, sh)
            for s in range(S):
                q0, q1 = valid(Q, W, sw, s * dw - pl)
                b, dj = _phase_tap(s * dw - pl, sw)
                plane = ((c * sh + a) * sw + b) * Hp + di
                _run_copy(pf, cf, np.uint64(((c * R + r) * S + s) * P * Q), plane * Q + dj, P, Q, p0, p1, q0, q1)


@cpu_inline
def _run_copy(pf, cf, row, src, P, Q, p0, p1, q0, q1):
    # One column-matrix row from planes as wide as its Q columns: entry p*Q + q reads plane
    # entry p*Q + q + src, so the block [p0, p1) x [q0, q1) is one flat copy (rows of 10-30
    # elements, each copied on its own, were too short for the vectorised loop body); the
    # entries it copies from outside the block, which lie between two of its rows, are then
    # zeroed, with the rows outside it.
    zero = cf.dtype.type(0)
    if p1 == p0 or q1 == q0:
        p0, p1 = 0, 0
    for i in range(p0 * Q):
        cf[row + np.uint64(i)] = zero
    if p1 > p0:
        first, last = p0 * Q + q0, (p1 - 1) * Q + q1
        for i in range(first, last):
            cf[row + np.uint64(i)] = pf[np.uint64(src + i)]
        for p in range(p0, p1):
            for q in range(q0):
                cf[row + np.uint64(p * Q + q)] = zero
            for q in range(q1, Q):
                cf[row + np.uint64(p * Q + q)] = zero
    for i in range(p1 * Q, P * Q):
        cf[row + np.uint64(i)] = zero


@cpu_inline
def col2im_phases(cf, pn, P, Q, H, W, geo):
    """pn = the phase planes, Q wide (phase_shape), of col2im's (C, H, W) result
    (merge_phases writes it out)."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, _, _, Hp, _ = pn.shape
    pf = pn.reshape(pn.size)
    for i in range(pf.size):
        pf[i] = pn.dtype.type(0)
    for c in range(C):
        for r in range(R):
            p0, p1 = valid(P, H, sh, r * dh - pt)
            a, di = _phase_tap(r * dh - pt, sh)
            for s in range(S):
                q0, q1 = valid(Q, W, sw, s * dw - pl)
                if q1 == q0:
                    continue
                b, dj = _phase_tap(s * dw - pl, sw)
                plane = ((c * sh + a) * sw + b) * Hp + di
                _run_add(cf, pf, np.uint64(((c * R + r) * S + s) * P * Q), plane * Q + dj, Q, p0, p1, q0, q1)


@cpu_inline
def _run_add(cf, pf, row, dst, Q, p0, p1, q0, q1):
    # _run_copy's flat run, backwards: the entries between the block's rows are zeroed in the
    # column matrix first, so adding them to the planes changes nothing (the sums of every
    # plane entry keep their order).
    if p1 == p0 or q1 == q0:
        return
    zero = cf.dtype.type(0)
    for p in range(p0, p1):
        for q in range(q0):
            cf[row + np.uint64(p * Q + q)] = zero
        for q in range(q1, Q):
            cf[row + np.uint64(p * Q + q)] = zero
    for i in range(p0 * Q + q0, (p1 - 1) * Q + q1):
        pf[np.uint64(dst + i)] += cf[row + np.uint64(i)]
