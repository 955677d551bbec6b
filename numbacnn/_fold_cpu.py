"""The batch-norm fold's kernel (numbacnn._fold): compare a model's conv-bias and batch-norm
sources with the copy its folded scales and biases came from, and fold again where they differ.

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

from ._jit import cpu_inline, cpu_intrinsic, cpu_serial

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
    # Column j of pair f: sizes[f] (its channels) values.
    return carray(_pointer(addrs[f, j], like), sizes[f])


@cpu_serial
def fold(addrs, sizes, eps, source, fresh, starts, changed):  # pragma: no cover - compiled
    """Per pair f, the sources at ``addrs[f, :5]`` (conv bias, batch-norm weight, bias, running
    mean and variance, ``sizes[f]`` channels each), whose copy starts at ``source[starts[f]]``:
    unless ``fresh``, compare them with that copy bit for bit; where any differs, copy them
    there and write the folded bias and scale at ``addrs[f, 5:7]``. A few values a channel: one
    thread (the weights are the conv's own, read live). ``changed[f]``: whether pair f was folded."""
    for f in range(sizes.size):
        same = not fresh
        for j in range(5):
            if same and not _same_run(_array(addrs, sizes, f, j, source), source, starts[f] + j * sizes[f]):
                same = False
        changed[f] = not same
        if not same:
            for j in range(5):  # a loop, not a slice assignment: see layers/_siblings_cpu._stack
                a, o = _array(addrs, sizes, f, j, source), starts[f] + j * sizes[f]
                for k in range(sizes[f]):
                    source[o + k] = a[k]
            b, g, beta, mean, var = [_array(addrs, sizes, f, j, source) for j in range(5)]
            bf, sf = _array(addrs, sizes, f, 5, source), _array(addrs, sizes, f, 6, source)
            for k in range(sizes[f]):  # formed in float64: float32 rounds once per value
                s = np.float64(g[k]) / math.sqrt(np.float64(var[k]) + eps[f])
                sf[k] = s
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
