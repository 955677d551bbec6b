"""What the executor keeps per input signature (``Plan``) and per inference caller (``Pass``), and the
decisions it makes once per signature: the inputs' check, one thread or the pool, a batch whole or in parts."""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from . import _fold, _shapes, _siblings
from ._arena import Arena
from ._graph_replay import Replay
from ._threads import PARALLEL_MIN, PARALLEL_MIN_FLOPS
from .graph import Graph, GraphError
from .layer import Ctx, Shape

__all__ = ["Plan", "Pass", "check_inputs", "one_thread", "replay_calls", "micro_batches", "independent", "in_parts"]


def check_inputs(graph: Graph, shapes: dict[str, Any], dtype: np.dtype, free: bool,
                 xs: Sequence[Any]) -> tuple[int, dict[str, Shape]]:
    """A new input signature's check, before anything runs: the inputs' count, dtype and
    per-sample shapes against ``graph``'s (``shapes``; ``free``: some size follows the input);
    returns the batch and the concrete per-sample shapes of every node."""
    if len(xs) != len(graph.inputs):
        raise GraphError(f"model takes {len(graph.inputs)} input(s), found {len(xs)}")
    batch = None
    for name, x in zip(graph.inputs, xs):
        want = shapes[name]
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"input '{name}': expected an array, found {type(x).__name__}")
        if x.dtype != dtype:
            fix = f"convert the data (x.astype(np.{dtype.name}))"
            if x.dtype in (np.float32, np.float64):  # the dtypes a model can take
                fix += f" or the model (model.astype('{x.dtype}'))"
            raise TypeError(f"input '{name}': expected {dtype.name} data, found {x.dtype}; {fix}")
        if not _shapes.fits(tuple(x.shape[1:]), want):
            raise GraphError(f"input '{name}': expected shape {_shapes.expected(want)}, found {tuple(x.shape)}")
        if batch is not None and x.shape[0] != batch:
            raise GraphError(f"input '{name}': batch {x.shape[0]} differs from {batch}")
        batch = x.shape[0]
    if not batch:
        raise GraphError("the input batch is empty")
    if not free:
        return int(batch), shapes
    return int(batch), _shapes.infer(graph, {n: x.shape[1:] for n, x in zip(graph.inputs, xs)})


def one_thread(graph: Graph, shapes: dict[str, Shape], grad: bool) -> bool:
    """Whether a batch-1 pass of ``graph`` (per-sample ``shapes``) runs on one thread: a batch
    of 1 gives every kernel one chunk, and under PARALLEL_MIN elements no elementwise or
    pooling loop runs in parallel (but 3x3 max-pools from a few thousand values, a few us a call:
    max_pool3d_cpu; on one thread they run serially), so nothing is left for a second thread,
    unless (without gradients) a node has PARALLEL_MIN_FLOPS of work: its kernel may split the
    sample."""
    nodes = [(n, node) for n, node in graph.nodes.items() if node.layer != "input"]
    return all(math.prod(s) < PARALLEL_MIN for s in shapes.values()) and (grad or all(
        node.obj.flops([shapes[i] for i in node.inputs], shapes[n]) < PARALLEL_MIN_FLOPS for n, node in nodes))


# Inference of a large batch runs in parts of at least MICRO_BATCH_MIN samples, each part's
# activations (every node's output, summed) at most MICRO_BATCH_BYTES, where the model moves
# more than MICRO_BATCH_MIN_TRAFFIC bytes of activations per thousand FLOPs: a part's values stay
# in the caches between one node and the next, where the whole batch's went out to memory and
# back (a 3x3 stride-2 max pool of googlenet_mini at batch 256 ran at 2.1 ms in the model, 1.3 ms
# on data just read). Batch 256 on the CPU, 2 threads, six rounds alternating part sizes, median
# ms: resnet_bottleneck (92 bytes a kFLOP, 8.9 MB of activations a sample) whole 158, parts of
# 128: 150, 64: 144, 32: 143; googlenet_mini (43, 1.6 MB) whole 53.6, 128: 51.1, 64: 51.2;
# vgg_small (12.5, 1.0 MB; its Winograd products want the whole batch) whole 56.0, 128: 57.8,
# 64: 58.3 (left whole). Then (2026-12-06, eight rounds in one process, /work/probe/s13/mb2.py)
# resnet_bottleneck 32: 159.3 against 64: 166.0, googlenet_mini 128: 62.2 against 64: 64.4: the
# sum of a sample's activations parts them so (a budget on the largest one gave resnet_bottleneck
# parts of 64, and googlenet_mini 64 where resnet_bottleneck got 32). Smaller parts again
# (2026-12-07, blocks alternating in one process, each after the cores check,
# /work/probe/s29/parts2.py, medians, parts_*.txt): resnet_bottleneck at 256 in parts of 21:
# 172.3, 16: 156.6, 14: 157.0, and 32: 208.0 against 14: 170.9; at 32, two parts of 16 against
# the batch whole 26.3 against 29.7; googlenet_mini 85 against 128: 56.4 / 57.5 and 72.9 / 76.0
# (level); resnet_basic 51 against 85: 116.7 / 125.1. Those runs were on a busy host (the batch
# whole took 212 ms at 256, 149-159 in quiet suite runs); in the next quiet suite run, parts of 14,
# resnet_bottleneck took 153.0 ms at 256 and 18.2 at 32, level with its parts of 32 (148.7-158.5
# and 18.0-18.7): smaller parts pay where other work shares the caches. A 128 MB budget and parts
# of at least 16 samples part resnet_bottleneck in 16s, googlenet_mini in 85-86s (its size 82)
# and resnet_basic in 51-52s (49). The floor of 16 keeps parts at the batch sizes the layers'
# plans were tuned on (siblings merge from 16 samples, _siblings.MERGED_MIN_BATCH), and a part
# has at least a sample per thread (under that, conv2d splits samples over threads).
MICRO_BATCH_BYTES = 128 << 20
MICRO_BATCH_MIN = 16
MICRO_BATCH_PER_THREAD = 1  # samples a part has at least for each thread
MICRO_BATCH_MIN_TRAFFIC = 32


def independent(layer: Any) -> bool:
    """Whether ``layer``'s inference treats each sample on its own, so that a batch may run in
    parts: numbacnn's own layers, but for a batch norm without running statistics (it
    normalises with the batch's). A plugin's layer may mix samples: never split around it
    (nor let the replay repeat a built-in's call for its subclass, which may do more)."""
    return type(layer).__module__.startswith("numbacnn.layers.") and getattr(layer, "track_running_stats", True)


def micro_batches(graph: Graph, batch: int, shapes: dict[str, Shape], itemsize: int,
                  threads: int | None = None) -> list[tuple[int, int]] | None:
    """The parts (start, stop) an inference of ``batch`` samples of ``graph`` (per-sample
    ``shapes``) runs in, as equal as they come, or None for the batch whole (see above);
    ``threads``: Numba's thread count (None: this thread's now)."""
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    sizes = [math.prod(s) * itemsize for s in shapes.values()]
    size = max(MICRO_BATCH_MIN, MICRO_BATCH_PER_THREAD * threads, MICRO_BATCH_BYTES // max(1, sum(sizes)))
    if batch < 2 * size:  # every part at least ``size``
        return None
    flops = sum(node.obj.flops([shapes[i] for i in node.inputs], shapes[n])
                for n, node in graph.nodes.items() if node.layer != "input")
    if sum(sizes) * 1000 < MICRO_BATCH_MIN_TRAFFIC * flops:
        return None
    parts = batch // size
    return [(i * batch // parts, (i + 1) * batch // parts) for i in range(parts)]


def in_parts(plan: Plan, xs: Sequence[Any], backend: Any, dtype: Any, outputs: list[str],
             run: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``run`` (an inference pass) on each of ``plan.parts`` of the inputs ``xs``, its outputs
    gathered in the plan's own arrays of the whole batch (valid until its next call, as a
    pass's outputs are)."""
    if not plan.outs_whole:
        plan.outs_whole = [backend.empty((plan.batch, *plan.shapes[o]), dtype) for o in outputs]
    for a, b in plan.parts:
        for whole, y in zip(plan.outs_whole, run([x[a:b] for x in xs])):
            whole[a:b] = y
    return list(plan.outs_whole)


def replay_calls(plan: Plan, forwards: list[Any], steps: list[tuple], ctxs: list[Ctx], first: int,
                 outs: list[int], handed: dict[int, tuple[int, int]] | None = None) -> tuple[list[tuple], list[int]]:
    """An executor's replay of ``plan`` (``first`` input slots, outputs in slots ``outs``): its
    calls, each the node's forward, input position(s) in the replay's values (an int for one),
    context, the plan's buffers, layer plans, in-place flag, expected output shape and step
    index; and where in those values the outputs are. A step that passes its input on
    untouched (``_fold.skip``: a batch norm, relu or add that inference fused into a conv)
    makes no call: its readers and the outputs take its input instead. A later sibling conv
    (``handed``: its first member's step and index, numbacnn._siblings) calls for the output
    that member handed on. resnet_bottleneck's inference calls 33 of its 101 steps,
    googlenet_mini's 44 of 78 (its three pools after joins pass their join's value on)."""
    at = list(range(first))  # per value slot, its position in the replay's values
    calls: list[tuple] = []
    for k, (forward, (_, ins, _, _), ctx, pool, plans, inplace, want) in enumerate(
            zip(forwards, steps, ctxs, plan.pools, plan.plans, plan.inplace, plan.wants)):
        if forward is _fold.skip:
            at.append(at[ins[0]])
            continue
        if handed and k in handed:
            forward = _siblings.handed_call(plan.plans[handed[k][0]], handed[k][1])
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
        self.fast: list[tuple | None] = []  # per call, its kernel call to repeat on the same inputs (Executor._replay)
        self.outs: list[int] = []  # and where in its values the outputs are
        self.one_thread = False  # too small for Numba's pool to pay anywhere: run on one thread
        self.replays: dict[Hashable, Replay] = {}  # CUDA graphs: "forward", ("backward", input_grad)
        self.parts: list[tuple[int, int]] | None = None  # inference in parts (micro_batches)
        self.outs_whole: list[Any] = []  # and the outputs the parts are gathered in

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
