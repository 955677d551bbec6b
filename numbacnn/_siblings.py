"""Inference's sibling 1x1 convolutions: two or more conv2d nodes that read the same value and
are 1x1, stride 1, unpadded, undilated and ungrouped (an Inception module's conv1,
conv3_reduce and conv5_reduce) run as one product a sample (layers/_siblings_cpu) at the first
member's step, which hands the others their outputs: each later member's step takes its value
from there and makes no kernel call. A member's relu fused as numbacnn._fold fuses it (``relu_pairs``)
is applied as its rows go out; a member with a folded batch norm or a fused residual join stays
on its own. The values differ from each member's own product only in rounding (a taller product
is blocked differently by OpenBLAS), NaN and the infinities spreading as there.

Below MERGED_MIN_BATCH samples the members run apart, each its own forward, at the first
member's step (bit for bit their own values); its comment has googlenet_mini's timings. CPU
only, with the other fusions (``NUMBACNN_FUSE_RELU=0`` turns it off).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ._joined import pointwise
from ._threads import batch_chunks
from .layer import Ctx, one_call, recorded

__all__ = ["HANDED", "groups", "SiblingConvs", "handed", "handed_call"]

#: The key under which the first member's plans (its step's per-signature dict) keep the other
#: members' outputs of the last call: the executor takes them from there.
HANDED = "siblings.handed"


def _pointwise(layer: Any) -> bool:
    # numbacnn._joined's 1x1 at stride 1
    return pointwise(layer) and layer.stride == (1, 1)


def groups(steps: list[tuple], alone: set[int]) -> list[list[int]]:
    """The steps of every group of two or more 1x1 conv2d siblings (``_pointwise``) that read one
    value, in step order; ``alone``: conv steps that must run on their own (a folded batch norm,
    a fused residual join)."""
    by_input: dict[int, list[int]] = {}
    for k, (layer, ins, _, _) in enumerate(steps):
        if len(ins) == 1 and k not in alone and _pointwise(layer):
            by_input.setdefault(ins[0], []).append(k)
    return [members for members in by_input.values() if len(members) > 1]


# Fewest samples for which SiblingConvs makes one product a sample: below, each member runs its
# own forward (its own path: shifted taps at batch 1) at the first member's step. googlenet_mini,
# 2 threads, the model alternated with its parent (/work/probe/s17/inf.py), ms, one product from
# batch 1 against the members apart: batch 1 1.08 / 0.90 (then with each sample's columns split
# over the threads, a 4x4 plane's 16 in two chunks, against three shifted-taps kernels; the split
# went with the batch-1 product), 2 1.76-1.81 / 1.71-1.73, 4 2.55-2.65 / 2.48-2.51, 8
# level (3.63 / 3.57-3.73), 16 6.09-6.14 / 6.19-6.41, 32 10.90-11.06 / 11.36-11.66, 256
# 78.6-79.1 / 80.0-83.6.
MERGED_MIN_BATCH = 16


class SiblingConvs:
    """The first member's inference forward: every member's output. ``layers`` and ``forwards``
    are the members' layers and inference forwards (a fused relu's included), ``params`` their
    parameter dicts (the model's arrays, updated in place; a new bind makes a new one),
    ``relus`` whether each applies a fused relu. From MERGED_MIN_BATCH samples, one product a
    sample (layers/_siblings_cpu); below, each member's own forward on this step's context
    (with its parameters and plans of its own). Returns the first member's output and keeps
    the others' in its step's plans (``HANDED``)."""

    def __init__(self, layers: list[Any], forwards: list[Any], params: list[dict[str, Any]],
                 relus: list[bool]) -> None:
        self.sizes = [layer.out_channels for layer in layers]
        self.total = sum(self.sizes)
        self.forwards = forwards
        self.params = params
        self.relus = np.array(relus, np.bool_)

    def __call__(self, ctx: Ctx, x: Any) -> Any:
        ys = self._merged(ctx, x) if x.shape[0] >= MERGED_MIN_BATCH else self._apart(ctx, x)
        ctx._plans[HANDED] = ys[1:]
        return ys[0]

    def _apart(self, ctx: Ctx, x: Any) -> tuple:
        own, params = ctx._plans, ctx.params
        ys, calls = [], []
        try:
            for i, (forward, p) in enumerate(zip(self.forwards, self.params)):
                ctx._plans, ctx.params = own.setdefault(("sibling", i), {}), p
                y, call = recorded(ctx, forward, x)
                ys.append(y)
                calls.append(call)
        finally:
            ctx._plans, ctx.params = own, params
        ctx._call = one_call(calls)
        return tuple(ys)

    def _merged(self, ctx: Ctx, x: Any) -> tuple:
        from .layers._siblings_cpu import siblings_forward

        N, C, H, W = x.shape
        L = H * W
        T = batch_chunks(N)
        ys = tuple(ctx.empty((N, K, H, W)) for K in self.sizes)
        wcat, bcat, scr = ctx.scratch((self.total, C)), ctx.scratch((self.total,)), ctx.scratch((T, self.total * L))
        empty = np.empty(0, x.dtype)
        ws = tuple(p["weight"].reshape(K, C) for p, K in zip(self.params, self.sizes))
        bs = tuple(p.get("bias", empty) for p in self.params)
        y3 = tuple(y.reshape(N, K, L) for y, K in zip(ys, self.sizes))
        ctx._repeatable(siblings_forward, x.reshape(N, C, L), ws, bs, y3, self.relus, wcat, bcat, scr, T)
        return ys


def handed(ctx: Ctx, *_: Any) -> Any:
    """A later member's forward: never called (the executor takes its value from the first
    member's plans, ``HANDED``)."""
    raise RuntimeError(f"conv2d node '{ctx.name}': its sibling ran it; the executor takes its output from there")


def _handed_value(plans: dict, i: int, ctx: Ctx, *_: Any) -> Any:
    ctx._call = one_call(())  # nothing to do again: the replay takes the same array on the same input
    return plans[HANDED][i]


def handed_call(plans: dict, i: int) -> Any:
    """A replay's call for a later member: the ``i``-th output its first member handed on,
    ``plans`` being that member's plans in the replayed signature."""
    return partial(_handed_value, plans, i)
