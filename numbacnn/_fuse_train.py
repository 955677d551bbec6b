"""A relu fused into the batch norm or add it reads, for every pass with gradients (CPU).

A batch norm (1d, 2d, 3d) or add whose output only a relu reads (not a graph output) writes
relu(y) itself, as it writes y; the relu node then passes that array on as its own output, and
its backward, which reads only its output, runs as before. Neither layer's backward reads its
own output (a batch norm's reads its input, an add's nothing), so both are unchanged. This
saves the relu's pass over memory (and its buffer) in every training forward:
resnet_bottleneck's step at batch 32, 124.4 against 126.2 ms with the batch norms fused
(README, Development notes). The relu applied is relu's own rule (NaN kept, -0.0 to 0).

A conv2d's or linear's relu stays a node of its own here, though their kernels apply one at
inference: one buffer fewer in the forward left the step arena's online allocation (``_heap``)
more fragmented in the backward, so the step took more memory, not less (batch 32, the
arena's new chunks with those relus fused against not: vgg_small 31.2 against 25.8 MB,
googlenet_mini 48.4 against 45.2 MB, lenet5 2.9 against 2.3 MB, for 0.2-0.3 ms of vgg_small's
24.5 ms step); resnet_bottleneck's add + relu pairs lower it (176.0 against 178.0 MB).

Inference without gradients has its own fusions (numbacnn._fold); a batch norm it cannot
fold into a conv keeps this one. ``NUMBACNN_FUSE_RELU=0`` turns both off. CPU only.
"""

from __future__ import annotations

import copy
from typing import Any

from ._fold import lone_readers
from .layer import Ctx, device_method
from .layers.add import Add
from .layers.batch_norm1d import BatchNorm1d
from .layers.batch_norm2d import BatchNorm2d
from .layers.batch_norm3d import BatchNorm3d

__all__ = ["relu_pairs", "forwards", "passed"]

#: The layers whose copy with ``fused_relu`` set applies relu's rule in training (exact
#: types: a subclass may run another forward); see the module's docstring for conv2d's and
#: linear's.
FUSES_RELU = (BatchNorm1d, BatchNorm2d, BatchNorm3d, Add)


def relu_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int,
               device: str) -> list[tuple[int, int]]:
    """(producing step, relu step) of every relu whose one input is the output of a layer of
    ``FUSES_RELU`` that nothing else reads and that is not a graph output. None off the CPU
    or when fusing is off."""
    return [(j, k) for k, j in lone_readers(steps, readers, keep, first, device)
            if type(steps[j][0]) in FUSES_RELU]


def passed(ctx: Ctx, x: Any) -> Any:
    """The fused relu's forward: its producer's output is its own (an alias, which the
    executor's arenas hold by reference count), kept for its backward as relu keeps its output."""
    ctx.save(x)
    return x


def forwards(steps: list[tuple], readers: list[int], keep: set[int], first: int, device: str) -> list[Any]:
    """Per step, the forward of passes with gradients: each layer's own, but for each fused
    pair's producer (a copy with ``fused_relu``) and relu (``passed``)."""
    out = [device_method(layer, "forward", device) for layer, _, _, _ in steps]
    for j, k in relu_pairs(steps, readers, keep, first, device):
        layer = copy.deepcopy(steps[j][0])  # Layer.__deepcopy__ copies the built state, no re-binding
        layer.fused_relu = True
        out[j] = device_method(layer, "forward", device)
        out[k] = passed
    return out
