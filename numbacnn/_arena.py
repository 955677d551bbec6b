"""The inference arena: activation buffers shared between nodes once their readers are done.

In inference nothing is kept for backward, so a buffer can serve a later node as soon as the
last reader of the value in it has run. Buffers are flat per dtype; a request takes the
smallest free one that fits (best fit) and gets a reshaped view of it. A value that aliases
another (a flatten view, dropout's identity in eval, an in-place ReLU) holds the same buffer,
which is freed only when every holder has let go.

The arena decides once per input signature: the executor records which views each node got
and replays them on later calls with no bookkeeping here (see ``executor.Plan``). Buffers stay
between calls; ``trim`` drops those no remembered signature uses any more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .device import align_slack, aligned_start

__all__ = ["Arena"]


class Arena:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._free: dict[np.dtype, list[Any]] = {}
        self._bases: list[Any] = []
        self._holders: dict[int, list[Any]] = {}  # id(view) -> [view, base, holds]
        self._refs: dict[int, int] = {}  # id(base) -> holders of any view of it
        self.used: set[int] = set()  # id(base) of every buffer taken since the last reset
        self.allocated_bytes = 0
        self.live_bytes = 0  # bytes of buffers some value still holds

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        size = math.prod(shape)
        free = self._free.setdefault(dtype, [])
        fits = [i for i, b in enumerate(free) if b.size - aligned_start(b) >= size]
        if fits:
            base = free.pop(min(fits, key=lambda i: free[i].size))
        else:
            base = self.backend.empty((max(size, 1) + align_slack(self.backend, dtype),), dtype)
            self._bases.append(base)
            self.allocated_bytes += base.size * dtype.itemsize
        self.live_bytes += base.size * base.dtype.itemsize
        self.used.add(id(base))
        start = aligned_start(base)  # each value starts on a 64-byte line (device.ALIGN)
        view = base[start:start + size].reshape(shape)
        self._holders[id(view)] = [view, base, 1]
        self._refs[id(base)] = 1
        return view

    def owns(self, a: Any) -> bool:
        return id(a) in self._holders

    def sole(self, a: Any) -> bool:
        """Whether ``a`` is ours and no other value holds its buffer (a view of it, or a value it
        is a view of), so that writing into it changes no other value."""
        entry = self._holders.get(id(a))
        return entry is not None and entry[2] == 1 and self._refs[id(entry[1])] == 1

    def retain(self, a: Any, like: Any) -> None:
        """``a`` (possibly ``like`` itself) now also holds the buffer behind ``like``."""
        base = self._holders[id(like)][1]
        entry = self._holders.get(id(a))
        if entry is None:
            self._holders[id(a)] = [a, base, 1]
        else:
            entry[2] += 1
        self._refs[id(base)] += 1

    def release(self, a: Any) -> None:
        entry = self._holders.get(id(a))
        if entry is None:
            return  # not ours: a graph input, a parameter
        entry[2] -= 1
        if entry[2] == 0:
            del self._holders[id(a)]
        base = entry[1]
        self._refs[id(base)] -= 1
        if self._refs[id(base)] == 0:
            del self._refs[id(base)]
            self._free[base.dtype].append(base)
            self.live_bytes -= base.size * base.dtype.itemsize

    def reset(self) -> None:
        """Every buffer is free again (the start of a pass that decides afresh)."""
        self._holders.clear()
        self._refs.clear()
        self._free = {}
        self.used = set()
        self.live_bytes = 0
        for base in self._bases:
            self._free.setdefault(base.dtype, []).append(base)

    def trim(self, keep: set[int]) -> None:
        """Forget the buffers whose ids are not in ``keep`` (no remembered signature uses them),
        so that many input sizes over time do not pile up memory."""
        dropped = [b for b in self._bases if id(b) not in keep]
        if dropped:
            self._bases = [b for b in self._bases if id(b) in keep]
            self.allocated_bytes -= sum(b.size * b.dtype.itemsize for b in dropped)
            self.reset()
