"""What the executor keeps per input signature (``Plan``) and per inference caller (``Pass``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Hashable

from . import _fold
from ._arena import Arena
from ._graph_replay import Replay
from ._threads import PARALLEL_MIN, PARALLEL_MIN_FLOPS
from .layer import Ctx, Shape

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Plan", "Pass", "one_thread", "replay_calls"]


def one_thread(graph: Graph, shapes: dict[str, Shape], grad: bool) -> bool:
    """Whether a batch-1 pass of ``graph`` (per-sample ``shapes``) runs on one thread: a batch
    of 1 gives every kernel one chunk, and under PARALLEL_MIN elements no elementwise or
    pooling loop runs in parallel, so nothing is left for a second thread, unless (without
    gradients) a node has PARALLEL_MIN_FLOPS of work: its kernel may split the sample."""
    nodes = [(n, node) for n, node in graph.nodes.items() if node.layer != "input"]
    return all(math.prod(s) < PARALLEL_MIN for s in shapes.values()) and (grad or all(
        node.obj.flops([shapes[i] for i in node.inputs], shapes[n]) < PARALLEL_MIN_FLOPS for n, node in nodes))


def replay_calls(plan: Plan, forwards: list[Any], steps: list[tuple], ctxs: list[Ctx], first: int,
                 outs: list[int]) -> tuple[list[tuple], list[int]]:
    """An executor's replay of ``plan`` (``first`` input slots, outputs in slots ``outs``): its
    calls, each the node's forward, input position(s) in the replay's values (an int for one),
    context, the plan's buffers, layer plans, in-place flag, expected output shape and step
    index; and where in those values the outputs are. A step that passes its input on
    untouched (``_fold.skip``: a batch norm, relu or add that inference fused into a conv)
    makes no call: its readers and the outputs take its input instead. resnet_bottleneck's
    inference calls 33 of its 101 steps, googlenet_mini's 47 of 78."""
    at = list(range(first))  # per value slot, its position in the replay's values
    calls: list[tuple] = []
    for k, (forward, (_, ins, _, _), ctx, pool, plans, inplace, want) in enumerate(
            zip(forwards, steps, ctxs, plan.pools, plan.plans, plan.inplace, plan.wants)):
        if forward is _fold.skip:
            at.append(at[ins[0]])
            continue
        moved = tuple(at[i] for i in ins)
        at.append(first + len(calls))
        calls.append((forward, moved[0] if len(moved) == 1 else moved, ctx, pool, plans, inplace, want, k))
    return calls, [at[o] for o in outs]


class Plan:
    """What one input signature needs that does not depend on the data, per node (in the
    executor's step order): the expected output shape, the buffers its context hands out,
    the layer's own plans, whether it runs in place."""

    def __init__(self, batch: int, shapes: dict[str, Shape], order: list[str]) -> None:
        self.batch = batch
        self.shapes = shapes  # concrete per-sample shapes of every node
        self.wants = [(batch, *shapes[n]) for n in order]
        self.pools: list[list[Any]] = [[] for _ in order]
        self.plans: list[dict[Hashable, Any]] = [{} for _ in order]
        self.inplace = [False] * len(order)
        self.ready = False  # the arena's (training on the CPU: the step heap's) decisions are recorded
        self.bases: set[int] = set()  # id() of the arena buffers (heap chunks) this plan uses
        self.acc: dict[int, Any] = {}  # training: fan-out gradient sums, by value slot
        self.calls: list[tuple] | None = None  # the replay's call list (``replay_calls``)
        self.outs: list[int] = []  # and where in its values the outputs are
        self.one_thread = False  # too small for Numba's pool to pay anywhere: run on one thread
        self.replays: dict[Hashable, Replay] = {}  # CUDA graphs: "forward", ("backward", input_grad)

    def replay(self, key: Hashable) -> Replay:
        """The CUDA graph state of one direction of this signature (``_graph_replay``)."""
        found = self.replays.get(key)
        if found is None:
            found = self.replays[key] = Replay()
        return found


class Pass:
    """What one inference caller owns: its node contexts, its arena, its plans, and the
    recording pass's ``trace`` of (node, output bytes, live bytes)."""

    def __init__(self, ctxs: dict[str, Ctx], backend: Any) -> None:
        self.ctxs = ctxs
        self.in_order = list(ctxs.values())  # as the executor's steps
        self.arena = Arena(backend)
        self.plans: dict[Hashable, Plan] = {}
        self.trace: list[tuple[str, int, int]] = []
        self.folds = _fold.Folds([], [], self.in_order)  # inference's batch norms folded into convs
