"""Fenced runs behind ``numbacnn.testing.run_fenced``: a layer's CPU forward and backward with
every array it touches cut from the middle of a larger buffer whose margins hold a marker.

Kernels index flat views with unsigned offsets and unrolled branches that skip bounds checks
(conv2d_cpu, max_pool2d_cpu, ...); a geometry they get wrong reads or writes just past an
array, where Numba raises nothing. Here a stray read lands in a margin and brings NaN into
the results; a stray write changes a margin, which ``run_fenced`` reports. The inputs, output
gradient, parameters, gradients, buffers and every ``ctx.empty`` allocation (scratch included)
are fenced so, and the allocations start out filled with the marker too (a read of memory
never written shows up as NaN, as in ``check_layer``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from .layer import Ctx, Layer

# Margin before and after each array: at least this many elements, and at least the array's
# own size (a kernel a whole row or plane off still lands in it).
FENCE_MIN = 64
# Quiet NaNs with a payload no arithmetic produces (computed NaNs carry none), and an integer
# pattern; margins are compared bit for bit.
_MARKS = {4: np.uint32(0x7FC0BEEF), 8: np.uint64(0x7FF8DEADBEEF0000), 2: np.uint16(0x7E5A), 1: np.uint8(0xA5)}


class FenceError(AssertionError):
    """A kernel wrote outside its arrays, or into an array it was given to read."""


class FencedRun(NamedTuple):
    """What ``run_fenced`` returns: the output, the input gradients (None where not asked
    for), the parameter gradients, the parameters the run used and the buffers after it (by
    short name)."""

    y: np.ndarray
    gxs: tuple
    grads: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]


class _Fence:
    """Arrays cut from marked buffers; ``check`` names every margin a kernel changed."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, np.ndarray, int, int]] = []

    def place(self, shape: Sequence[int], dtype: Any, what: str, value: Any = None) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64))
        m = max(FENCE_MIN, n)
        buf = np.empty(n + 2 * m, dtype)
        buf.view(_MARKS[dtype.itemsize].dtype)[:] = _MARKS[dtype.itemsize]
        view = buf[m:m + n].reshape(shape)
        if value is not None:
            view[...] = value
        self.blocks.append((what, buf, m, m + n))
        return view

    def check(self, where: str) -> None:
        for what, buf, lo, hi in self.blocks:
            mark = _MARKS[buf.dtype.itemsize]
            bits = buf.view(mark.dtype)
            before, after = np.flatnonzero(bits[:lo] != mark), np.flatnonzero(bits[hi:] != mark)
            if before.size or after.size:
                at = f"{int(before[-1]) - lo} (before its start)" if before.size else f"+{int(after[0])} past its end"
                raise FenceError(f"{where}: a kernel wrote outside {what}: {before.size + after.size} margin "
                                 f"element(s) changed, the nearest at offset {at}")


class _Backend:
    """The CPU backend's allocation calls, handing out fenced arrays."""

    name = "cpu"

    def __init__(self, fence: _Fence) -> None:
        self.fence = fence

    def empty(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        return self.fence.place(shape, dtype, f"scratch/output buffer {len(self.fence.blocks)} "
                                f"{tuple(shape)} {np.dtype(dtype)}")

    def take(self, shape: Sequence[int], dtype: Any) -> np.ndarray:  # as the inference arena's
        return self.empty(shape, dtype)

    def fill(self, a: np.ndarray, value: float) -> None:
        a.fill(value)

    def fill_zero(self, a: np.ndarray) -> None:
        a.fill(0)

    def assign(self, dst: np.ndarray, src: np.ndarray) -> None:
        np.copyto(dst, src)


def run_fenced(layer: Layer, inputs: Sequence[np.ndarray], gy: np.ndarray | None = None,
               params: dict[str, np.ndarray] | None = None, *, training: bool = True,
               needs_input_grad: Sequence[bool] | None = None, seed: int = 0) -> FencedRun:
    """Run ``layer``'s CPU forward (and backward, when ``gy`` is given) as the executor would,
    every array fenced; raise ``FenceError`` if a kernel wrote outside an array or into an
    input, the output gradient or a parameter. The dtype is the inputs' (float32 or float64).

    ``params`` (short names, e.g. ``"weight"``) replace ``layer.init_params``; ``gy`` None runs
    the forward alone, as inference without gradients does (``ctx.backward_expected`` False).
    """
    dtype = np.asarray(inputs[0]).dtype
    shapes = [tuple(np.shape(x)) for x in inputs]
    where = f"run_fenced({layer!r} on {', '.join(map(str, shapes))}, {dtype})"
    fence = _Fence()
    backend = _Backend(fence)
    rng = np.random.default_rng(seed)
    ctx = Ctx("layer", "cpu", dtype, backend, rng, layer=layer)
    per_sample = [s[1:] for s in shapes]
    initial = params if params is not None else layer.init_params(per_sample, rng)
    ctx.params = {k: fence.place(np.shape(v), dtype, f"parameter '{k}'", v) for k, v in initial.items()}
    ctx.grads = {k: fence.place(np.shape(v), dtype, f"gradient of '{k}'", 0) for k, v in initial.items()}
    ctx.buffers = {k: fence.place(np.shape(v), dtype, f"buffer '{k}'", v)
                   for k, v in layer.init_buffers(per_sample).items()}
    xs = [fence.place(s, dtype, f"input {i}", x) for i, (s, x) in enumerate(zip(shapes, inputs))]
    read_only = xs + list(ctx.params.values())
    if gy is not None:
        read_only.append(fence.place(np.shape(gy), dtype, "output gradient", gy))
    kept = [a.copy() for a in read_only]
    if gy is None:
        ctx.begin(training, arena=backend)
    else:
        ctx.begin(training)
    y = layer.forward(ctx, *xs)
    fence.check(where + " forward")
    gxs: tuple = ()
    grads: dict[str, np.ndarray] = {}
    if gy is not None:
        ctx.needs_input_grad = tuple(needs_input_grad) if needs_input_grad is not None else (True,) * len(xs)
        out = layer.backward(ctx, read_only[-1])
        gxs = out if isinstance(out, tuple) else (out,)
        fence.check(where + " backward")
        grads = {k: g.copy() for k, g in ctx.grads.items()}
    for a, b in zip(read_only, kept):
        if not np.array_equal(a, b, equal_nan=True):
            raise FenceError(f"{where}: a kernel wrote into an array it was given to read (an input, the output "
                             f"gradient or a parameter)")
    return FencedRun(np.array(y), tuple(None if g is None else np.array(g) for g in gxs), grads,
                     {k: v.copy() for k, v in ctx.params.items()}, {k: v.copy() for k, v in ctx.buffers.items()})
