"""conv2d CPU: the copies and sums its paths share (inlined or linked), and the weight-gradient reduction.

Padded HWC images: each sample becomes a zero-padded (H, W, C) image whose pixel rows hold
contiguous channels (conv2d_cpu's pixel-major path and conv2d_winograd_cpu read them), and
the input gradient comes back from the same layout.
"""

from __future__ import annotations

import numpy as np

from .._jit import REASSOC, cpu_call, cpu_inline, cpu_kernel, prange

__all__ = ["to_hwc", "to_hwc_rows", "from_hwc", "to_hwc_any", "to_hwc_rows_any", "from_hwc_any", "to_pixels",
           "bias_sum", "reduce_partials"]


@cpu_inline
def to_hwc(xn, xp, pt, pl):
    """xp[pt + h, pl + w, c] = xn[c, h, w]; the rest of xp (the padding) = 0."""
    to_hwc_rows(xn, xp, pt, pl, 0, xp.shape[0])


@cpu_inline
def _zero_padding(xf, pt, pl, H, W, Wp, C, i0, i1):
    # rows [i0, i1) of a flat padded (Hp, Wp, C) image: its padding (outside x's H x W) = 0
    zero = xf.dtype.type(0)
    for i in range(i0, i1):
        for j in range(Wp):
            if i < pt or i >= pt + H or j < pl or j >= pl + W:
                o = np.uint64((i * Wp + j) * C)
                for c in range(C):
                    xf[o + np.uint64(c)] = zero


@cpu_inline
def to_hwc_rows(xn, xp, pt, pl, i0, i1):
    """to_hwc's rows [i0, i1) of xp alone (a thread's share of one image)."""
    C, H, W = xn.shape
    Wp = xp.shape[1]
    xf = xp.reshape(xp.size)
    _zero_padding(xf, pt, pl, H, W, Wp, C, i0, i1)
    for h in range(max(i0 - pt, 0), min(i1 - pt, H)):
        for w in range(W):
            o = np.uint64(((h + pt) * Wp + w + pl) * C)
            for c in range(C):
                xf[o + np.uint64(c)] = xn[c, h, w]


@cpu_inline
def from_hwc(xp, xn, pt, pl):
    """xn[c, h, w] = xp[pt + h, pl + w, c]: the transpose of to_hwc (padding dropped). Runs of
    16 columns at a time, every channel, keep the HWC lines read in L1 (1.6x faster than
    a channel at a time, measured)."""
    C, H, W = xn.shape
    for h in range(H):
        for w0 in range(0, W, 16):
            for c in range(C):
                for w in range(w0, min(W, w0 + 16)):
                    xn[c, h, w] = xp[h + pt, w + pl, c]


# The 3x3 Winograd path's copies (its planes reach 32x32 and 16x16 with many channels: vgg_small's,
# resnet's first stage) choose their order by the planes' spacing. The pixel-major path and the
# 5x5 Winograd path keep the copies above: the second loop nest made the pixel-major backward's
# chunk compile in 1.85 s instead of 1.37, in a cold ``numbacnn train`` (lenet5's 12x12 planes).
# An L1 data cache of 64 sets of 64-byte lines, 8 ways (x86's): addresses 4 KB apart share a
# set. Channel planes whose spacing shares a power of two with those 4 KB put one pixel's values
# of many channels in a few sets.
# to_hwc_rows_any, from_hwc_any and to_pixels are linked helpers (``cpu_call``): typed once, not
# in each Winograd kernel's prange body again. A 64->64 3x3 forward and backward from an empty
# cache (AMD EPYC Zen 4, /work/probe/s23/wcomp.py, two runs each): conv2d_forward_winograd
# compiled in 5.8-5.9 s instead of 7.7-8.4, conv2d_backward_winograd in 5.4-5.5 instead of
# 8.8-9.9. LLVM leaves to_hwc_rows_any a call (an image's, or a row's at batch 1); the speed is level
# (forward 7.05-7.08 against 7.03-7.33 ms at batch 32, 2 threads, alternating trees).
L1_SET_SPAN = 4096
L1_WAYS = 8
# Below this many bytes a plane's pixels are few: a pixel's channels together won there
# (256 x 8x8 at batch 32: to_hwc 190 against 240 us 8 channels at a time).
MIN_ALIASED_PLANE_BYTES = 1024


@cpu_inline
def aliased(xn):
    """Whether the ``_any`` copies take xn's channel planes (its first axis) 8 at a time, each
    a run of columns, rather than every channel of a pixel at once: where one pixel's values of
    the channels fall more than L1_WAYS to a set, evicted before the next pixels' values in
    their lines are used (32 channels of 32x32 planes: 32 lines in one set). 2 threads, AMD
    EPYC, us, every sample's copy, a pixel's channels together / 8 at a time: to_hwc 32 x
    32x32 at batch 32 1490-1540 / 500-600, 64 x 32x32 at 8 1720 / 250, 16 x 32x32 at 32 440 /
    250; from_hwc 24 x 32x32 at 32 2350 / 380, 64 x 16x16 at 32 940 / 250, 128 x 16x16 1930 /
    500. Not aliased, a pixel's channels together are faster: 32 x 16x16 at batch 32, to_hwc
    67 / 120, from_hwc 70 / 124; 128 x 8x8, 58 / 112 and 74 / 118; and than from_hwc's runs of
    16 columns for every channel (32 x 16x16 at batch 256, 1460 against 550 us a pixel's
    channels together; 64 x 8x8, 530 against 210)."""
    C = xn.shape[0]
    plane = xn.size // max(C, 1) * xn.itemsize
    share = min(plane & -plane, L1_SET_SPAN)  # the largest power of two dividing the spacing
    return plane >= MIN_ALIASED_PLANE_BYTES and C * share > L1_WAYS * L1_SET_SPAN


@cpu_call
def to_hwc_rows_any(xn, xp, pt, pl, i0, i1):
    """to_hwc_rows in the order ``aliased`` chooses."""
    if not aliased(xn):
        to_hwc_rows(xn, xp, pt, pl, i0, i1)
        return
    C, H, W = xn.shape
    Wp = xp.shape[1]
    xf = xp.reshape(xp.size)
    _zero_padding(xf, pt, pl, H, W, Wp, C, i0, i1)
    for h in range(max(i0 - pt, 0), min(i1 - pt, H)):
        o = np.uint64(((h + pt) * Wp + pl) * C)
        for c0 in range(0, C, 8):
            for w in range(W):
                for c in range(c0, min(C, c0 + 8)):
                    xf[o + np.uint64(w * C + c)] = xn[c, h, w]


@cpu_inline
def to_hwc_any(xn, xp, pt, pl):
    """to_hwc in the order ``aliased`` chooses."""
    to_hwc_rows_any(xn, xp, pt, pl, np.int64(0), np.int64(xp.shape[0]))


@cpu_call
def from_hwc_any(xp, xn, pt, pl):
    """from_hwc in the order ``aliased`` chooses: 8 channels at a time, or a pixel's channels
    together."""
    C, H, W = xn.shape
    if aliased(xn):
        for h in range(H):
            for c0 in range(0, C, 8):
                for w in range(W):
                    for c in range(c0, min(C, c0 + 8)):
                        xn[c, h, w] = xp[h + pt, w + pl, c]
        return
    for h in range(H):
        for w in range(W):
            for c in range(C):
                xn[c, h, w] = xp[h + pt, w + pl, c]


@cpu_call
def to_pixels(yn, pixt, o, la, lb):
    """pixt[o + l, k] = yn[k, l] for the pixels l in [la, lb) of the (K, L) planes yn, in the
    order ``aliased`` chooses; returns how many of the values are NaN or +-Inf. The Winograd
    backward's output gradient, 2 threads, AMD EPYC, a pixel's channels together / 8 at a
    time: vgg_small's 32 x 32x32 at batch 32 1750 / 740 us, 64 x 32x32 at 8 980 / 360."""
    K = yn.shape[0]
    bad = 0
    if aliased(yn):
        for k0 in range(0, K, 8):
            for j in range(la, lb):
                l, u = np.uint64(j), np.uint64(o + j)  # unsigned: no negative-index wrap
                for k in range(k0, min(K, k0 + 8)):
                    v = yn[k, l]
                    pixt[u, k] = v
                    bad += np.int64(v - v != 0)
        return bad
    for j in range(la, lb):
        l, u = np.uint64(j), np.uint64(o + j)
        for k in range(K):
            v = yn[k, l]
            pixt[u, k] = v
            bad += np.int64(v - v != 0)
    return bad


@cpu_inline
def bias_sum(gy3, k):
    """The sum of gy3[:, k, :] (a bias gradient; a caller's REASSOC lets it run in lanes)."""
    acc = gy3.dtype.type(0)
    for n in range(gy3.shape[0]):
        for i in range(gy3.shape[2]):
            acc += gy3[n, k, i]
    return acc


@cpu_kernel(fastmath=REASSOC)  # the bias sum runs in vector lanes; NaN/Inf still propagate
def reduce_partials(part, gw2, gy3, gb, RS):
    """gw2 += the chunks' partials summed; gb += gy3 summed over samples and pixels (if any).
    RS = R*S > 0: the partials' columns are in the pixel-major order (r, s, c), not (c, r, s).
    The partials are scratch: chunk 0's is left holding the sums."""
    T, K, J = part.shape
    C, RS = (J, 1) if RS == 0 else (J // RS, RS)
    pf, step = part.reshape(part.size), np.uint64(K * J)
    for k in prange(K):
        # Row k's partials summed in chunk order (part[0] + part[1] + ...) into chunk 0's row,
        # as flat runs that vectorise, then added into gw2: column j = c*RS + rs of gw2 is
        # column rs*C + c of the partials (the same when RS was 0); nested loops, not j // RS
        # and j % RS: the divisions made this 8x slower
        row = np.uint64(k * J)
        for t in range(1, T):
            at = row + np.uint64(t) * step
            for j in range(J):
                pf[row + np.uint64(j)] += pf[at + np.uint64(j)]
        for c in range(C):
            for rs in range(RS):
                gw2[k, c * RS + rs] += pf[row + np.uint64(rs * C + c)]
        if gb.size:
            gb[k] += bias_sum(gy3, k)
