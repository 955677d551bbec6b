"""A relu fused into the batch norm it reads, for every pass with gradients (CPU).

A batch norm (1d, 2d, 3d: one forward) whose output only a relu reads (not a graph output)
writes relu(y) itself, in the same loop; the relu node then passes that array on as its own
output, and its backward, which reads only its output, runs as before. This saves the relu's
pass over memory (and its buffer) in every training forward: resnet_bottleneck's step at
batch 32, 124.4 against 126.2 ms (README, Development notes). The batch norm's backward reads
its input, never its output, so it is unchanged; the relu applied is relu's own rule (NaN
kept, -0.0 to 0).

Inference without gradients has its own fusions (numbacnn._fold); a batch norm it cannot
fold into a conv keeps this one. ``NUMBACNN_FUSE_RELU=0`` turns both off. CPU only.
"""

from __future__ import annotations

import copy
from typing import Any

from ._fold import lone_relus
from .layer import Ctx, device_method
from .layers.batch_norm1d import BatchNorm1d
from .layers.batch_norm2d import BatchNorm2d
from .layers.batch_norm3d import BatchNorm3d

__all__ = ["bn_relu_pairs", "forwards", "passed"]


def bn_relu_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
                  device: str) -> list[tuple[int, int]]:
    """(batch-norm step, relu step) of every relu whose one input is a batch norm's output
    that nothing else reads and that is not a graph output. None off the CPU or when fusing
    is off."""
    return [(j, k) for k, j in lone_relus(steps, readers, keep, first, device)
            if type(steps[j][0]) in (BatchNorm1d, BatchNorm2d, BatchNorm3d)]  # one forward, theirs


def passed(ctx: Ctx, x: Any) -> Any:
    """The fused relu's forward: its batch norm's output is its own (an alias, which the
    executor's arenas hold by reference count), kept for its backward as relu keeps its output."""
    ctx.save(x)
    return x


def forwards(steps: list[tuple], readers: list[int], keep: set[int], first: int, device: str) -> list[Any]:
    """Per step, the forward of passes with gradients: each layer's own, but for each fused
    pair's batch norm (a copy with ``fused_relu``) and relu (``passed``)."""
    out = [device_method(layer, "forward", device) for layer, _, _, _ in steps]
    for j, k in bn_relu_pairs(steps, readers, keep, first, device):
        bn = copy.deepcopy(steps[j][0])  # Layer.__deepcopy__ copies the built state, no re-binding
        bn.fused_relu = True
        out[j] = device_method(bn, "forward", device)
        out[k] = passed
    return out
