"""The training step's arena: activations, saved values and gradients share memory by liveness.

A training step holds memory only while something still needs it, as PyTorch's autograd
does: a node's output until its last reader's forward has run, unless a node saved it for its
backward (``ctx.saved``: an input, its own output, a mask, an argmax), then until that node's
backward has run; a gradient until the backward of the node it belongs to has run (every
consumer has added into it by then). The model's outputs are held for the whole step (a
``host=False`` output stays valid through the backward), the inputs' gradients to its end.

The first step of an input signature records: every ``ctx.empty`` of its forward and backward
takes a view of its heap (``_heap``), and the views stay in the nodes' buffer lists (``Plan.pools``), so
later steps of that signature replay them with no bookkeeping, as inference replays its arena.
Replaying is sound because every step runs the same calls in the same order: a forward only
reads what this forward wrote, a backward only what its forward saved and its own gradients.
So the step's values live only from its forward to its backward: a second ``backward`` needs a
new forward (the executor refuses one without), and the input gradient ``backward`` returns is
a host copy. CPU only: views of a device array do not say which buffer they view.
"""

from __future__ import annotations

from typing import Any, Sequence

from ._heap import Heap
from .layer import Ctx

__all__ = ["StepArena", "accumulate"]


class StepArena:
    """Records one input signature's training step in a shared arena (see the module)."""

    def __init__(self, backend: Any) -> None:
        self.arena = Heap(backend)
        self.plan: Any = None  # the plan whose forward was recorded, its backward not yet
        self._left: list[int] = []
        self._holds: list[list[Any]] = []  # per node: the buffers its saved values hold

    def begin_forward(self, plan: Any, readers: list[int]) -> None:
        self.arena.reset()
        for pool in plan.pools:
            pool.clear()  # a failed recording's views: the arena no longer knows them
        plan.acc.clear()
        self.plan = None
        self._left = list(readers)
        self._holds = [[] for _ in plan.pools]

    def after_forward(self, k: int, ctx: Ctx, y: Any, ins: Sequence[int], values: list[Any],
                      keep: set[int]) -> None:
        """Node ``k`` ran: its output and saved values hold their buffers, its scratch and
        the inputs it was the last reader of let go."""
        arena, taken = self.arena, ctx._taken
        ctx._taken, ctx._arena = [], None
        base = arena.base_of(y)
        if base is not None:
            arena.hold(base)  # the value's own hold (an output taken here, or an alias of an input)
        holds = self._holds[k]
        for base in _bases(arena, ctx.saved):
            arena.hold(base)
            holds.append(base)
        for base in filter(None, map(arena.base_of, taken)):  # an empty array holds no block
            arena.drop(base)
        for i in ins:
            self._left[i] -= 1
            if self._left[i] == 0 and i not in keep:
                base = arena.base_of(values[i])
                if base is not None:
                    arena.drop(base)

    def end_forward(self, plan: Any) -> None:
        self.plan = plan

    def before_backward(self, ctx: Ctx) -> None:
        del ctx._pool[ctx._cursor:]  # from here on the backward's own requests
        ctx._arena, ctx._taken = self.arena, []

    def after_backward(self, k: int, ctx: Ctx, gy: Any, gxs: Sequence[Any], needs: Sequence[bool]) -> None:
        """Node ``k``'s backward ran: the gradients it returns hold their buffers; its output's
        gradient, its scratch and what it saved let go."""
        arena, taken = self.arena, ctx._taken
        ctx._taken, ctx._arena = [], None
        for gx, need in zip(gxs, needs):
            base = arena.base_of(gx) if need and gx is not None else None
            if base is not None:
                arena.hold(base)
        for base in filter(None, map(arena.base_of, taken)):  # an empty array holds no block
            arena.drop(base)
        base = arena.base_of(gy)
        if base is not None:
            arena.drop(base)
        for base in self._holds[k]:
            arena.drop(base)
        self._holds[k] = []

    def sum_buffer(self, g: Any) -> Any:
        """A buffer of the arena for a gradient summed from several consumers (held by it)."""
        return self.arena.take(tuple(g.shape), g.dtype)

    def let_go(self, g: Any) -> None:
        """A gradient was added into another buffer: its hold ends."""
        base = self.arena.base_of(g)
        if base is not None:
            self.arena.drop(base)

    def end(self, plan: Any, plans: Sequence[Any]) -> None:
        """The step is recorded: later steps of ``plan`` replay it."""
        plan.ready, plan.bases = True, self.arena.used
        self.plan, self._holds = None, []
        self.arena.trim(set().union(*(p.bases for p in plans)))


def accumulate(backend: Any, plan: Any, grads: list[Any], owned: list[bool], i: int, g: Any,
               record: StepArena | None) -> None:
    """Add gradient ``g`` into value slot ``i``'s: the first one is borrowed from the layer that
    returned it, a second sums into a buffer of the plan's own (``plan.acc``; the arena's while
    ``record``ing), later ones add into that."""
    if grads[i] is None:
        grads[i] = g
        return
    if owned[i]:
        backend.add(grads[i], grads[i], g)
    else:
        # A borrowed gradient may alias another value's (add returns gy twice): the sum goes
        # into a buffer of our own, in one pass over both.
        acc = plan.acc.get(i)
        if acc is None or acc.shape != g.shape:
            acc = plan.acc[i] = record.sum_buffer(g) if record is not None else backend.empty(g.shape, g.dtype)
        backend.add(acc, grads[i], g)
        if record is not None:
            record.let_go(grads[i])
        grads[i] = acc
        owned[i] = True
    if record is not None:
        record.let_go(g)


def _bases(arena: Heap, saved: Any) -> list[Any]:
    """The arena buffers the arrays in ``saved`` (nested tuples and lists too) view."""
    found = []
    for item in saved:
        if isinstance(item, (tuple, list)):
            found += _bases(arena, item)
        elif hasattr(item, "base"):
            base = arena.base_of(item)
            if base is not None:
                found.append(base)
    return found
