"""The batch-norm fold's kernel (numbacnn._fold): compare a model's conv and batch-norm
sources with the copy their folded arrays came from, and fold again where they differ.

The arrays reach the kernel as addresses in an int64 table, not as a tuple: a tuple of arrays
is a type of its own for each length, so every model with a different number of conv and
batch-norm pairs compiled the kernel again (3-6 s each, and ``numbacnn warmup`` could not pay
it ahead for a user's own model). ``numbacnn._fold.Folds`` keeps every array whose address it
passes alive for as long as it passes it, and checks that each is C-contiguous and of the
model's dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, types

from ._jit import cpu_inline, cpu_intrinsic, cpu_kernel, prange

__all__ = ["fold"]


@cpu_intrinsic
def _pointer(typingctx, addr, like):
    """The integer ``addr`` as a pointer to elements of ``like``'s dtype."""
    ptr = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(addr, like), codegen


@cpu_inline
def _array(addrs, sizes, f, j, like):  # pragma: no cover - compiled
    # Column j of pair f: the weights (j 0, folded 6) hold sizes[f, 0] values, the rest sizes[f, 1].
    return carray(_pointer(addrs[f, j], like), sizes[f, 0] if j == 0 or j == 6 else sizes[f, 1])


@cpu_kernel
def fold(addrs, sizes, eps, source, fresh, starts, bounds, changed):  # pragma: no cover - compiled
    """Per pair f, the sources at ``addrs[f, :6]`` (conv weight and bias, batch-norm weight,
    bias, running mean and variance; ``sizes[f]`` = (weight size, channels)), whose copy starts
    at ``source[starts[f]]``: unless ``fresh``, compare them with that copy bit for bit; where
    any differs, copy them there and write the folded weight and bias at ``addrs[f, 6:8]``.
    The pairs in chunks bounds[t]..bounds[t + 1] (about equal sizes), over the threads: the
    comparison reads every weight twice each call (resnet_bottleneck at batch 1: 64 us of
    about 1000 on one thread). ``changed[f]``: whether pair f was folded."""
    for t in prange(bounds.size - 1):
        for f in range(bounds[t], bounds[t + 1]):
            same = not fresh
            end = starts[f]
            for j in range(6):
                a = _array(addrs, sizes, f, j, source)
                if same and not _same_run(a, source, end):
                    same = False
                end += a.size
            changed[f] = not same
            if not same:
                end = starts[f]
                for j in range(6):
                    a = _array(addrs, sizes, f, j, source)
                    source[end:end + a.size] = a
                    end += a.size
                _refold(_array(addrs, sizes, f, 0, source), _array(addrs, sizes, f, 1, source),
                        _array(addrs, sizes, f, 2, source), _array(addrs, sizes, f, 3, source),
                        _array(addrs, sizes, f, 4, source), _array(addrs, sizes, f, 5, source), eps[f],
                        _array(addrs, sizes, f, 6, source), _array(addrs, sizes, f, 7, source))


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
