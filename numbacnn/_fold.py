"""Inference-mode batch-norm folding: a batch_norm2d node that reads a conv2d node's output (and
is that output's only reader) is folded into the convolution for inference without gradients.

The conv runs as conv(x, w) * s + b', b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps)
per output channel (conv2d_cpu.conv2d_forward's ``scale``: the im2col, shifted-taps and
pixel-major paths scale as they write y, Winograd multiplies a copy of w), and the batch-norm
node passes the conv's output on untouched. This is exactly
what batch_norm2d computes in evaluation from its running statistics, so it is skipped only
there: training (batch statistics), any pass with gradients and a batch norm without running
statistics (``track_running_stats=False``: batch statistics in evaluation too) run unfolded.

The folded scales and biases belong to one inference thread (``Folds``), never to the model or
the arena. Before every folded call, in one kernel call for all pairs, their sources (conv bias,
batch-norm weight, bias and running statistics) are compared bit for bit with copies of them
and s and b' recomputed only where one changed: an edit in place, a training step or a loaded
checkpoint is seen on the next call. The conv reads its live weight itself. (Weights folded
into copies, w * s, had to be compared with a copy of w on every call, and the two extra
copies in cache cost resnet_bottleneck's batch-1 inference 80-90 us of about 900.) CPU only:
on CUDA the graph runs unfolded.

``NUMBACNN_FOLD_BN=0`` in the environment turns folding off (read when a model is built or
moved to a device).

Inference without gradients also fuses a relu into the conv2d it reads (directly or through a
folded batch norm), into the add it reads (a residual join) or into the linear it reads, when
nothing else reads that output and it is not a graph output: the conv's kernels apply the relu
as they write y (the column paths, while a sample's output is still in cache; the Winograd
paths in one pass after), the add's last sum is add_relu_forward, the linear's chunks take
their rows through relu's rule after their product, bit for bit relu's result (NaN kept, -0.0
to 0), and the relu node passes y on. ``NUMBACNN_FUSE_RELU=0`` turns
this off. CPU only, as folding.

A channel concatenation read only by a per-channel pool (max, average, global max or global
average; ``pool_pairs``) pools each of its inputs first and joins the pooled parts
(``PooledConcat``): the same values, bit for bit, as every output channel's pool reads that
channel alone, but the join copies the pooled sizes, not the whole inputs (from 1 MiB of inputs;
smaller ones are joined first, in cache). The concat node then yields the pool's output and the
pool node passes it on: googlenet_mini's 3x3 stride-2 pools after inc3b and inc4b and its
global pool after inc5a. Batch 256, 2 threads, the model alternated with its parent: 84.1 /
79.8 -> 79.3 / 77.6 ms; batch 32 9.90 -> 9.56 ms; batch 1 level. The same switch turns it off.

A residual join fuses the same way (``add_pairs``): a two-input add one of whose inputs is a
conv2d's output (directly or through a folded batch norm) that nothing else reads and that is
not a graph output runs inside that conv, when its other input (the residual) is ready before
the conv runs. The conv is handed the residual as a second input (``inference_steps``) and
computes (y + b) + r, then the add's relu if it had one, as it writes y (im2col; the other
paths in one pass after): bit for bit the add's sums, as onnxruntime's Conv + Add
fusion, but for which NaN a sum of two NaNs keeps (sign and payload: the fused sum takes the
conv's side first, where the add may have had the residual first). resnet_bottleneck's
inference at batch 64, 2 threads: 53.5-61.6 -> 50.4-51.2 ms. The same switch turns it off.
Where that residual is itself a 1x1 conv's output (a bottleneck's projection shortcut beside
its conv3), both convs run at the earlier one's step (``numbacnn._joined``).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from . import _joined, _siblings
from .layer import Ctx, device_method, layer_kernels, one_call, recorded
from .layers.add import Add
from .layers.avg_pool2d import AvgPool2d
from .layers.batch_norm2d import BatchNorm2d
from .layers.concat import Concat
from .layers.conv2d import Conv2d
from .layers.global_avg_pool2d import GlobalAvgPool2d
from .layers.global_max_pool2d import GlobalMaxPool2d
from .layers.linear import Linear
from .layers.max_pool2d import MaxPool2d
from .layers.relu import ReLU

__all__ = ["add_pairs", "fold_pairs", "folding_enabled", "fusing_enabled", "inference_steps", "lone_readers",
           "plan_inference", "pool_pairs", "relu_pairs", "forwards", "Folds", "PooledConcat", "skip"]

# Input bytes from which PooledConcat pools before the join; below, it joins first (the graph's
# order): four pools' parallel regions cost more than a copy that stays in cache. A join of
# 32, 48, 16 and 16 channels of 16x16 into a 3x3 stride-2 max pool, 2 threads, us, joined first
# / pooled first (/work/probe/s17/cp.py): batch 1 83 / 88, 4 171 / 188, 8 level, 16 498 / 467,
# 256 10800 / 9250.
POOLED_CONCAT_MIN_BYTES = 1 << 20
# Layers that compute each output channel from the same input channel alone, whatever the others.
PER_CHANNEL_POOLS = (MaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d)


def folding_enabled() -> bool:
    """Whether ``NUMBACNN_FOLD_BN`` allows folding (anything but ``0`` does)."""
    return os.environ.get("NUMBACNN_FOLD_BN", "1").strip() != "0"


def fold_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
               device: str) -> list[tuple[int, int]]:
    """(conv step, batch-norm step) of every foldable pair in an executor's ``steps``: a
    batch_norm2d with running statistics whose one input is a conv2d output that nothing else
    reads and that is not a graph output. None off the CPU or when folding is off."""
    pairs: list[tuple[int, int]] = []
    if device != "cpu" or not folding_enabled():
        return pairs
    for k, (layer, ins, _, _) in enumerate(steps):
        if type(layer) is not BatchNorm2d or not layer.track_running_stats or len(ins) != 1:
            continue
        j = ins[0] - first  # the producing step (negative: a graph input)
        if j < 0 or type(steps[j][0]) is not Conv2d or readers[ins[0]] != 1 or ins[0] in keep:
            continue
        pairs.append((j, k))
    return pairs


def plan_inference(plain: list[Any], steps: list[tuple], readers: list[int], keep: set[int], first: int,
                   device: str, params: dict[str, dict[str, Any]] | None = None) -> tuple:
    """An executor's inference without gradients: the folded (conv, batch norm) pairs
    (``fold_pairs``), the forward of each step (``forwards``, from the ``plain`` ones) with the
    relus, adds, pools and sibling 1x1 convolutions fused, the steps and their readers as it
    runs them (``inference_steps``; each joined pair of 1x1 convs, ``numbacnn._joined``, at its
    earlier conv's step), the (concat, pool) pairs whose concat yields the pool's output
    (``pool_pairs``), and per later sibling step its (first member's step, index) among the
    outputs that member hands on (``numbacnn._siblings``; ``params``: the model's, by node)."""
    folds = fold_pairs(steps, readers, keep, first, device)
    relus = relu_pairs(steps, readers, keep, first, folds, device)
    adds = add_pairs(steps, readers, keep, first, folds, device)
    pools = pool_pairs(steps, readers, keep, first, device)
    out = forwards(plain, steps, folds, device, relus, adds, pools)
    joined = _joined.pairs(steps, readers, keep, first, folds, adds)
    for i, j, _ in joined:  # the earlier conv runs both; the later passes its value on
        out[i], out[j] = _joined.JoinedConvs((out[i], out[j]), out[j].__self__.fused_relu, j), skip
    handed: dict[int, tuple[int, int]] = {}
    if device == "cpu" and fusing_enabled() and params is not None:
        fused_relu = {j for j, _ in relus}
        alone = {j for j, _ in folds} | {j for j, _, _ in adds} | {i for i, _, _ in joined}
        for members in _siblings.groups(steps, alone):
            out[members[0]] = _siblings.SiblingConvs([steps[j][0] for j in members], [out[j] for j in members],
                                                     [params[steps[j][3]] for j in members],
                                                     [j in fused_relu for j in members])
            for i, j in enumerate(members[1:]):
                out[j], handed[j] = _siblings.handed, (members[0], i)
    return folds, out, inference_steps(steps, adds, len(readers), joined), pools, handed


def fusing_enabled() -> bool:
    """Whether ``NUMBACNN_FUSE_RELU`` allows fusing relus into convs (anything but ``0`` does)."""
    return os.environ.get("NUMBACNN_FUSE_RELU", "1").strip() != "0"


def lone_readers(steps: list[tuple], readers: list[int], keep: set[int], first: int, device: str,
                 kinds: tuple[type, ...] = (ReLU,)) -> list[tuple[int, int]]:
    """(reader step, producing step) of every one-input step of a layer class in ``kinds``
    (exactly: not a subclass) that is the one reader of another step's output, an output that
    is not a graph output: what a fusion may hand the reader's work to. None off the CPU or
    when fusing is off."""
    if device != "cpu" or not fusing_enabled():
        return []
    return [(k, ins[0] - first) for k, (layer, ins, _, _) in enumerate(steps)
            if type(layer) in kinds and len(ins) == 1 and ins[0] >= first and readers[ins[0]] == 1
            and ins[0] not in keep]


def pool_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
               device: str) -> list[tuple[int, int]]:
    """(concat step, pool step) of every per-channel pool (``PER_CHANNEL_POOLS``) that is the one
    reader of a concat's output, an output that is not a graph output. None off the CPU or
    when fusing is off."""
    return [(j, k) for k, j in lone_readers(steps, readers, keep, first, device, PER_CHANNEL_POOLS)
            if type(steps[j][0]) is Concat]


def relu_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
               folds: list[tuple[int, int]], device: str) -> list[tuple[int, int]]:
    """(conv, add or linear step, relu step) of every relu fused into a conv2d, an add or a
    linear at inference: a relu whose one input is such a step's output, or a batch norm's
    folded into a conv (``folds``), that nothing else reads and that is not a graph output.
    None off the CPU or when fusing is off."""
    folded = {k: j for j, k in folds}  # the conv behind a folded batch norm
    return [(folded.get(j, j), k) for k, j in lone_readers(steps, readers, keep, first, device)
            if type(steps[folded.get(j, j)][0]) in (Conv2d, Add, Linear)]


def add_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
              folds: list[tuple[int, int]], device: str) -> list[tuple[int, int, int]]:
    """(conv step, add step, residual slot) of every two-input add fused into the conv2d
    behind one of its inputs at inference: that input is the conv's output (or a batch
    norm's folded into it, ``folds``), read by nothing else and not a graph output, and the
    add's other input, the residual, is ready before the conv runs (a graph input or an
    earlier step's output). Of two such convs, the later one. None off the CPU or when
    fusing is off."""
    if device != "cpu" or not fusing_enabled():
        return []
    folded = {k: j for j, k in folds}  # the conv behind a folded batch norm
    out = []
    for a, (layer, ins, _, _) in enumerate(steps):
        if type(layer) is not Add or len(ins) != 2:
            continue
        best = None
        for u, v in (ins, ins[::-1]):
            if u < first or readers[u] != 1 or u in keep:
                continue
            j = folded.get(u - first, u - first)
            if type(steps[j][0]) is Conv2d and v < first + j and (best is None or j > best[0]):
                best = (j, a, v)
        if best is not None:
            out.append(best)
    return out


def inference_steps(steps: list[tuple], adds: list[tuple[int, int, int]], slots: int,
                    joined: list[tuple[int, int, int]] = ()) -> tuple[list[tuple], list[int]]:
    """``steps`` as inference runs them, and how many steps read each of the ``slots`` there: each fused
    conv (``add_pairs``) reads its add's residual too, and the add passes the conv's value on; of
    a joined pair (``numbacnn._joined``), the earlier conv reads the later one's input too and
    the later one passes on the residual, now the earlier conv's sum."""
    out = list(steps)
    for j, a, v in adds:
        layer, ins, kind, name = steps[j]
        out[j] = (layer, (*ins, v), kind, name)
        layer, ins, kind, name = steps[a]
        out[a] = (layer, tuple(i for i in ins if i != v), kind, name)
    for i, j, _ in joined:
        layer, ins, kind, name = steps[i]
        out[i] = (layer, (*ins, steps[j][1][0]), kind, name)
        layer, ins, kind, name = out[j]
        out[j] = (layer, ins[1:], kind, name)
    readers = [0] * slots
    for _, ins, _, _ in out:
        for i in ins:
            readers[i] += 1
    return out, readers


def forwards(plain: list[Any], steps: list[tuple], pairs: list[tuple[int, int]], device: str,
             relus: list[tuple[int, int]] = (), adds: list[tuple[int, int, int]] = (),
             pools: list[tuple[int, int]] = ()) -> list[Any]:
    """Per step, the forward of folded inference: ``plain`` but for each pair's conv (run with
    a bias always: b' is never empty) and batch norm (``skip``), each fused relu's conv, add or
    linear (``fused_relu``) and relu (``skip``), each fused add's conv (which then takes the
    residual, and the add's relu) and add (``skip``), and each pooled concat (``PooledConcat``)
    and its pool (``skip``)."""
    out = list(plain)
    for j, k in pools:
        out[j], out[k] = PooledConcat(steps[k][0]), skip
    convs = {}
    for j, k in [*pairs, *relus, *((j, a) for j, a, _ in adds)]:
        if j not in convs:
            convs[j] = copy.deepcopy(steps[j][0])  # Layer.__deepcopy__ copies the built state, no re-binding
        out[k] = skip
    for j, _ in pairs:
        convs[j].bias = True
    for j, _ in relus:
        convs[j].fused_relu = True
    for j, a, _ in adds:
        convs[j].fused_relu = convs.pop(a, steps[a][0]).fused_relu  # the add's relu, now the conv's last step
    for j, conv in convs.items():
        out[j] = device_method(conv, "forward", device)
    return out


def skip(ctx: Ctx, x: Any) -> Any:
    """The folded batch norm's forward: its conv already applied it."""
    return x


class PooledConcat:
    """A concat's inference forward when a per-channel pool is its one reader: each input
    through the pool's own forward (the concat node's context, the pool's kernels), then the
    pooled parts joined along channels; below POOLED_CONCAT_MIN_BYTES of inputs, joined first.
    Their kernel calls are kept for the executor's replay as one (``one_call``)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.kernels = layer_kernels(type(pool), "cpu")
        self.concat_all = layer_kernels(Concat, "cpu").concat_all

    def __call__(self, ctx: Ctx, *xs: Any) -> Any:
        if sum(x.nbytes for x in xs) < POOLED_CONCAT_MIN_BYTES:  # the graph's own order
            joined, join = recorded(ctx, self._join, xs)
            y, pool = recorded(ctx, self._pool, joined)
            ctx._call = one_call((join, pool))
            return y
        parts, calls = zip(*(recorded(ctx, self._pool, x) for x in xs))
        y, join = recorded(ctx, self._join, parts)
        ctx._call = one_call((*calls, join))
        return y

    def _join(self, ctx: Ctx, xs: tuple) -> Any:
        y = ctx.empty((xs[0].shape[0], sum(x.shape[1] for x in xs), *xs[0].shape[2:]))
        ctx._repeatable(self.concat_all, tuple(xs), y)
        ctx.save()
        return y

    def _pool(self, ctx: Ctx, x: Any) -> Any:
        own, ctx._kernels = ctx._kernels, self.kernels
        try:
            return self.pool.forward(ctx, x)
        finally:
            ctx._kernels = own


class Folds:
    """One inference thread's folded scales and biases, for every (conv, batch norm) pair.

    ``ctxs`` are the thread's contexts for folded calls: each folded conv's is replaced by one
    that reads this thread's folded arrays; the earlier conv of each joined pair among
    ``forwards`` (``numbacnn._joined``) gets the later one's as ``_partner``. ``refresh()`` runs
    before each folded call."""

    def __init__(self, pairs: list[tuple[int, int]], steps: list[tuple], ctxs: list[Ctx],
                 forwards: list[Any] = ()) -> None:
        self.ctxs = list(ctxs)
        self._pairs = [(ctxs[j], ctxs[k], steps[k][0].eps) for j, k in pairs]
        self._folded: list[Ctx] = []
        for (j, _), (conv, _, _) in zip(pairs, self._pairs):
            ctx = self.ctxs[j] = Ctx(conv.name, conv.device, conv.dtype, conv.backend, conv.rng, layer=steps[j][0])
            ctx.params, ctx.grads, ctx.buffers = {}, conv.grads, conv.buffers
            self._folded.append(ctx)  # its params and scale filled on the first refresh, in place after
        for i, forward in enumerate(forwards):  # a joined pair's earlier conv reads the later one's context
            if isinstance(forward, _joined.JoinedConvs):
                self.ctxs[i]._partner = self.ctxs[forward.partner]
        self._args: tuple | None = None

    def _prepare(self) -> tuple:
        # The live sources (the model's parameters are views into one flat array and its
        # buffers contiguous arrays, all updated in place, so they stay live until the executor
        # binds again and makes a new Folds), the folded arrays and the copy, passed to the
        # kernel by address: ``keep`` holds every one of them for as long as ``_args`` lives.
        keep, rows, sizes, eps = [], [], [], []  # sizes: channels
        for (conv, bn, e), folded in zip(self._pairs, self._folded):
            w = conv.params["weight"]
            K, dt = w.shape[0], w.dtype
            ones, zeros = np.ones(K, dt), np.zeros(K, dt)
            group = [conv.params.get("bias", zeros), bn.params.get("weight", ones), bn.params.get("bias", zeros),
                     bn.buffers["running_mean"], bn.buffers["running_var"]]
            for a in (w, *group):
                if not a.flags.c_contiguous or a.dtype != dt:
                    raise RuntimeError(f"conv2d node '{conv.name}' / batch_norm2d node '{bn.name}': expected "
                                       f"contiguous {dt} parameters to fold, found a {a.dtype} "
                                       f"{'array' if a.flags.c_contiguous else 'strided view'}; set "
                                       f"NUMBACNN_FOLD_BN=0")
            folded.params.update(weight=w, bias=np.empty(K, dt))
            folded._scale = np.empty(K, dt)
            group += [folded.params["bias"], folded._scale]
            keep += group
            rows.append([a.ctypes.data for a in group])
            sizes.append(K)
            eps.append(e)
        starts = np.cumsum([0, *(5 * k for k in sizes)]).astype(np.int64)
        return (np.array(rows, np.int64), np.array(sizes, np.int64), np.array(eps),
                np.empty(starts[-1], keep[0].dtype), starts, np.zeros(len(sizes), np.bool_), keep)

    def refresh(self) -> int:
        """Fold again every pair one of whose sources differs from the copy its folded arrays
        came from; returns how many."""
        if not self._pairs:
            return 0
        fresh = self._args is None
        if fresh:  # the kernel module is imported on first use: importing it makes a cache folder
            from ._fold_cpu import fold

            self._args = (fold, *self._prepare())
        kernel, addrs, sizes, eps, source, starts, changed, _ = self._args
        kernel(addrs, sizes, eps, source, fresh, starts, changed)
        return int(changed.sum())
