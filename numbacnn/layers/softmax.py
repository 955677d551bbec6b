"""softmax: exp(x - max) / sum(exp(x - max)) along one axis, as torch.nn.Softmax computes it.

``dim`` counts the batch axis, as in PyTorch: on (N, K) logits dim=1 (or -1) is the classes,
on (N, C, H, W) maps dim=1 is a softmax over the channels at every pixel. Negative dims count
from the end. Dim 0 (the batch axis) is refused: numbacnn's layers act on each sample. The
kernels see the input as (outer, K, inner), K the softmax axis, and work on each of the
outer * inner positions; the max is subtracted first, so large logits do not overflow. NaN
anywhere along the axis, +Inf, or a line of -Inf only gives NaN along it, as in PyTorch.
Backward (from the output): gx = y * (gy - sum(gy * y)).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..layer import Ctx, Layer, Shape, ShapeError


class Softmax(Layer):
    """Softmax along axis ``dim`` (batch axis included). Any shape -> same shape."""

    name = "softmax"
    inplace_ok = True
    #: The kernels' name prefix in softmax_cpu / softmax_cuda.
    kernel: ClassVar[str] = "softmax"

    def __init__(self, dim: int = 1) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, found {dim!r}")
        if dim == 0:
            raise ValueError(f"{self.name} over dim 0, the batch axis, would mix the samples of a batch; numbacnn "
                             f"layers act on each sample: give dim >= 1 (1 is the channels or classes), or -1")
        self.dim = dim

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check softmax`` (and log_softmax)."""
        return [
            {"config": {"dim": 1}, "input_shapes": [(2, 7)]},
            {"config": {"dim": 1}, "input_shapes": [(2, 3, 4, 5)]},
            {"config": {"dim": -2}, "input_shapes": [(1, 9, 3)],
             "bad_shapes": [([(4, 3)], "the batch axis")]},
            {"config": {"dim": 2}, "input_shapes": [(2, 3, 4, 3)],
             "bad_shapes": [([(2, 3)], "Dimension out of range")]},
        ]

    def _axis(self, rank: int) -> int:
        """The softmax axis of a full (batch-first) shape of ``rank`` dimensions."""
        return self.dim + rank if self.dim < 0 else self.dim

    def output_shape(self, x_shape: Shape) -> Shape:
        rank = len(x_shape) + 1
        if not -rank <= self.dim < rank:
            raise ShapeError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got "
                             f"{self.dim}) for input (N, {', '.join(map(str, x_shape))})")
        if self._axis(rank) == 0:
            raise ShapeError(f"dim {self.dim} is the batch axis of input (N, {', '.join(map(str, x_shape))}); "
                             f"numbacnn layers act on each sample: give a dim from 1 to {rank - 1}")
        return x_shape

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        return 5 * math.prod(output_shape)

    def _lines(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(outer, K, inner): the shape seen with the softmax axis in the middle."""
        d = self._axis(len(shape))
        return math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:])

    def forward(self, ctx: Ctx, x: Any) -> Any:
        outer, K, inner = self._lines(tuple(x.shape))
        y = x if ctx.inplace else ctx.empty_like(x)
        stats = ctx.empty((2, outer, inner))  # each position's max and its sum's reciprocal or log
        getattr(ctx.kernels, self.kernel + "_forward")(x.reshape(outer, K, inner), stats, y.reshape(outer, K, inner))
        ctx.save(y)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (y,) = ctx.saved
        outer, K, inner = self._lines(tuple(y.shape))
        sums = ctx.empty((outer, inner))
        gx = ctx.empty_like(gy)
        getattr(ctx.kernels, self.kernel + "_backward")(y.reshape(outer, K, inner), gy.reshape(outer, K, inner),
                                                       sums, gx.reshape(outer, K, inner))
        return gx
