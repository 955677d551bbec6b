"""The batch-norm fold's kernel (numbacnn._fold): compare a model's conv and batch-norm
sources with the copy their folded arrays came from, and fold again where they differ."""

from __future__ import annotations

import math

import numpy as np

from ._jit import cpu_inline, cpu_serial

__all__ = ["fold"]


@cpu_serial
def fold(srcs, eps, source, fresh, wfs, bfs):  # pragma: no cover - compiled
    """Per pair f, sources srcs[6f:6f+6] = (w, b, gamma, beta, mean, var) flat: unless
    ``fresh``, compare them with their copy in ``source`` bit for bit; where any differs, copy
    them there and write wfs[f], bfs[f]. Returns the number of pairs folded."""
    off = 0
    folded = 0
    for f in range(eps.size):
        same = not fresh
        end = off
        for j in range(6):
            a = srcs[6 * f + j]
            if same and not _same_run(a, source, end):
                same = False
            end += a.size
        if not same:
            end = off
            for j in range(6):
                a = srcs[6 * f + j]
                source[end:end + a.size] = a
                end += a.size
            _refold(srcs[6 * f], srcs[6 * f + 1], srcs[6 * f + 2], srcs[6 * f + 3], srcs[6 * f + 4],
                    srcs[6 * f + 5], eps[f], wfs[f], bfs[f])
            folded += 1
        off = end
    return folded


@cpu_inline
def _refold(w, b, g, beta, mean, var, eps, wf, bf):  # pragma: no cover - compiled
    # The scale is formed in float64, so float32 rounds once per element.
    K = b.size
    m = w.size // K
    for k in range(K):
        s = np.float64(g[k]) / math.sqrt(np.float64(var[k]) + eps)
        for i in range(k * m, (k + 1) * m):
            wf[i] = np.float64(w[i]) * s
        bf[k] = (np.float64(b[k]) - np.float64(mean[k])) * s + np.float64(beta[k])


@cpu_inline
def _same_run(a, source, off):  # pragma: no cover - compiled
    # Bit for bit, as 32-bit words: an OR of XORs with no early exit, which LLVM vectorises (a
    # float compare with NaN and signed-zero cases ran at a nanosecond per weight).
    x = a.view(np.uint32)
    y = source[off:off + a.size].view(np.uint32)
    d = np.uint32(0)
    for i in range(x.size):
        d |= x[i] ^ y[i]
    return d == 0
