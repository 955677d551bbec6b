"""Inference-mode batch-norm folding: a batch_norm2d node that reads a conv2d node's output (and
is that output's only reader) is folded into the convolution for inference without gradients.

The conv runs with w' = w * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps) per
output channel, and the batch-norm node passes the conv's output on untouched. This is exactly
what batch_norm2d computes in evaluation from its running statistics, so it is skipped only
there: training (batch statistics), any pass with gradients and a batch norm without running
statistics (``track_running_stats=False``: batch statistics in evaluation too) run unfolded.

The folded weight and bias belong to one inference thread (``Folded``), never to the model or
the arena. Before every folded call they are compared bit for bit with copies of the arrays
they came from (conv weight and bias, batch-norm weight, bias and running statistics) and
recomputed only when one changed: an edit in place, a training step or a loaded checkpoint is
seen on the next call, and the Winograd weight cache downstream sees the same bits and keeps
its transform. CPU only: on CUDA the graph runs unfolded.

``NUMBACNN_FOLD_BN=0`` in the environment turns folding off (read when a model is built or
moved to a device).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import numpy as np

from ._jit import cpu_inline, cpu_serial
from .layer import Ctx
from .layers.batch_norm2d import BatchNorm2d
from .layers.conv2d import Conv2d

__all__ = ["fold_pairs", "folded_conv", "folding_enabled", "Folded", "skip", "thread_folds"]


def folding_enabled() -> bool:
    """Whether ``NUMBACNN_FOLD_BN`` allows folding (anything but ``0`` does)."""
    return os.environ.get("NUMBACNN_FOLD_BN", "1").strip() != "0"


def fold_pairs(steps: list[tuple], readers: list[int], keep: set[int], first: int) -> list[tuple[int, int]]:
    """(conv step, batch-norm step) of every foldable pair in an executor's ``steps``: a
    batch_norm2d with running statistics whose one input is a conv2d output that nothing else
    reads and that is not a graph output."""
    pairs = []
    for k, (layer, ins, _, _) in enumerate(steps):
        if type(layer) is not BatchNorm2d or not layer.track_running_stats or len(ins) != 1:
            continue
        j = ins[0] - first  # the producing step (negative: a graph input)
        if j < 0 or type(steps[j][0]) is not Conv2d or readers[ins[0]] != 1 or ins[0] in keep:
            continue
        pairs.append((j, k))
    return pairs


def folded_conv(conv: Conv2d) -> Conv2d:
    """The conv layer as the folded call runs it: always with a bias (b' is never empty)."""
    layer = copy.deepcopy(conv)  # Layer.__deepcopy__ copies the built state, no re-binding
    layer.bias = True
    return layer


def thread_folds(pairs: list[tuple[int, int]], steps: list[tuple], ctxs: list[Ctx]
                 ) -> tuple[list[Ctx], list[Folded]]:
    """One inference thread's contexts for folded calls (``ctxs``, each folded conv's replaced
    by one that reads the folded arrays) and its ``Folded`` pairs, in ``pairs``' order."""
    out, folds = list(ctxs), []
    for j, k in pairs:
        conv, bn = ctxs[j], ctxs[k]
        fold = Folded(conv, bn, steps[k][0].eps)
        ctx = out[j] = Ctx(conv.name, conv.device, conv.dtype, conv.backend, conv.rng, layer=steps[j][0])
        ctx.params, ctx.grads, ctx.buffers = fold.params, conv.grads, conv.buffers
        folds.append(fold)
    return out, folds


def skip(ctx: Ctx, x: Any) -> Any:
    """The folded batch norm's forward: its conv already applied it."""
    return x


class Folded:
    """One thread's folded weight and bias for one (conv, batch norm) pair, and the copies of
    their sources. ``params`` is the dict the folded conv's context reads."""

    __slots__ = ("conv", "bn", "eps", "params", "source", "ones", "zeros")

    def __init__(self, conv: Ctx, bn: Ctx, eps: float) -> None:
        self.conv, self.bn, self.eps = conv, bn, eps
        self.params: dict[str, np.ndarray] = {}  # filled in place: the folded conv's context holds it
        self.source: np.ndarray | None = None  # w, b, gamma, beta, mean, var, flat, as last folded
        self.ones = self.zeros = np.empty(0)

    def refresh(self) -> None:
        """Fold again if any source differs from the copy the folded arrays came from."""
        w = self.conv.params["weight"]
        b = self.conv.params.get("bias")
        bp, bb = self.bn.params, self.bn.buffers
        if self.source is None or self.source.dtype != w.dtype or self.params["weight"].shape != w.shape \
                or not w.flags.c_contiguous:
            K = w.shape[0]
            self.params.update(weight=np.empty_like(w), bias=np.empty(K, w.dtype))
            self.ones, self.zeros = np.ones(K, w.dtype), np.zeros(K, w.dtype)
            self.source = np.empty(w.size + 5 * K, w.dtype)
            fresh = True
        else:
            fresh = False
        _fold(w, self.zeros if b is None else b, bp.get("weight", self.ones), bp.get("bias", self.zeros),
              bb["running_mean"], bb["running_var"], self.eps, self.source,
              fresh, self.params["weight"], self.params["bias"])


@cpu_serial
def _fold(w, b, g, beta, mean, var, eps, source, fresh, wf, bf):  # pragma: no cover - compiled
    """Unless ``fresh``, compare (w, b, g, beta, mean, var) with ``source`` bit for bit; if any
    differs, copy them there and write wf, bf. The scale is formed in float64, so float32
    rounds once per element."""
    K = w.shape[0]
    wflat = w.reshape(-1)
    n = wflat.size
    if not fresh and _same_run(wflat, source, 0) and _same_run(b, source, n) and _same_run(g, source, n + K) \
            and _same_run(beta, source, n + 2 * K) and _same_run(mean, source, n + 3 * K) \
            and _same_run(var, source, n + 4 * K):
        return False
    source[:n] = wflat
    source[n:n + K] = b
    source[n + K:n + 2 * K] = g
    source[n + 2 * K:n + 3 * K] = beta
    source[n + 3 * K:n + 4 * K] = mean
    source[n + 4 * K:] = var
    m = n // K
    wff = wf.reshape(-1)
    for k in range(K):
        s = np.float64(g[k]) / math.sqrt(np.float64(var[k]) + eps)
        for i in range(k * m, (k + 1) * m):
            wff[i] = np.float64(wflat[i]) * s
        bf[k] = (np.float64(b[k]) - np.float64(mean[k])) * s + np.float64(beta[k])
    return True


@cpu_inline
def _same_run(a, source, off):  # pragma: no cover - compiled
    # Bit for bit as far as it can matter: NaN matches NaN, -0.0 does not match 0.0.
    for i in range(a.size):
        x, y = a[i], source[off + i]
        if x != x:
            if y == y:
                return False
        elif x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
            return False
    return True
