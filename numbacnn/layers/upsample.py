"""upsample: nearest or bilinear resizing of images, as torch.nn.Upsample computes it.

The output is ``size``, or floor(input * scale_factor) per axis (in float64, as PyTorch), so
it follows the input's size: a free-size input stays free. Each output pixel reads the source
pixels PyTorch's CPU kernels read, for every size and scale:

- nearest: row floor(p * scale), at most H - 1, the product in float32, where scale is
  1 / scale_factor (H / P when given ``size`` or ``recompute_scale_factor=True``); an axis
  kept the same size is copied and a doubled one reads p // 2;
- bilinear: source coordinate scale * (p + 0.5) - 0.5, clamped at 0 (``align_corners=False``,
  scale as for nearest), or p * (H - 1) / (P - 1) (``align_corners=True``), in the data's dtype,
  blending rows i0 and i0 + 1 (i0 alone at the last row); an axis kept the same size is copied.

Backward adds each output gradient into the pixels it was read from, with the same weights.
The kernels take the mode as a code; each call tabulates both axes once (source indices and
weights per output index), from the scales computed here, and backward reuses the tables.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..layer import Ctx, Layer, Shape, ShapeError
from ._conv_geometry import flag, pair

#: The kernels' mode codes.
NEAREST, BILINEAR, ALIGN_CORNERS = 0, 1, 2
MODES = ("nearest", "bilinear")


def _factors(value: Any) -> tuple[float, float]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        raise TypeError(f"scale_factor must be a number or a pair of numbers, found {value!r}")
    if not all(v > 0 and math.isfinite(v) for v in items):
        raise ValueError(f"scale_factor must be positive, found {value!r}")
    return float(items[0]), float(items[1])


class Upsample(Layer):
    """Resize by nearest or bilinear interpolation. (C, H, W) -> (C, P, Q)."""

    name = "upsample"

    def __init__(self, size: int | Sequence[int] | None = None,
                 scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> None:
        if size is not None and scale_factor is not None:
            raise ValueError("only one of size or scale_factor should be defined, found both")
        if size is None and scale_factor is None:
            raise ValueError("either size or scale_factor should be defined, found neither")
        self.size = None if size is None else pair(size, "size")
        self.scale_factor = None if scale_factor is None else _factors(scale_factor)
        if mode not in MODES:
            raise ValueError(f"mode must be 'nearest' or 'bilinear', found {mode!r}")
        if align_corners is not None:
            flag(align_corners, "align_corners")
            if mode == "nearest":
                raise ValueError("align_corners can only be set with mode='bilinear' (as in PyTorch, "
                                 "an interpolating mode); leave it None with mode='nearest'")
        if recompute_scale_factor is not None:
            flag(recompute_scale_factor, "recompute_scale_factor")
            if recompute_scale_factor and size is not None:
                raise ValueError("recompute_scale_factor is not meaningful with an explicit size; "
                                 "give scale_factor instead, or leave it None")
        self.mode = mode
        self.align_corners = bool(align_corners)
        self.code = NEAREST if mode == "nearest" else ALIGN_CORNERS if self.align_corners else BILINEAR
        # The scale_factor the source coordinates divide by; None: the sizes' ratio.
        self.coordinate_factors = (None, None) if recompute_scale_factor or self.scale_factor is None \
            else self.scale_factor

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check upsample``."""
        return [
            {"config": {"scale_factor": 2}, "input_shapes": [(2, 3, 4, 5)],
             "bad_shapes": [([(2, 3, 4)], "expected an input of shape (C, H, W)")]},
            {"config": {"size": (7, 5), "mode": "bilinear"}, "input_shapes": [(2, 2, 4, 6)]},
            {"config": {"scale_factor": 1.5, "mode": "bilinear", "align_corners": True},
             "input_shapes": [(1, 2, 3, 5)]},
        ]

    def _out_size(self, H: int, W: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        sh, sw = self.scale_factor
        return math.floor(H * sh), math.floor(W * sw)

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        C, H, W = x_shape
        P, Q = self._out_size(H, W)
        if P < 1 or Q < 1:
            raise ShapeError(f"input {H}x{W} scaled by {self.scale_factor} gives an empty {P}x{Q} output: "
                             f"expected at least 1x1; use a larger scale_factor or give size")
        return C, P, Q

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, P, Q = output_shape
        return 0 if self.code == NEAREST else 8 * C * P * Q  # nearest copies

    def _scales(self, in_size: tuple[int, int], out_size: tuple[int, int], dtype: Any) -> tuple[Any, Any]:
        """The (height, width) factors the kernels turn output indices into source ones by,
        typed like the data, computed as PyTorch's kernels compute them."""
        T = np.dtype(dtype).type
        found = []
        for n, o, factor in zip(in_size, out_size, self.coordinate_factors):
            if self.code == ALIGN_CORNERS:
                found.append(T(n - 1) / T(o - 1) if o > 1 else T(0))
            else:
                # Nearest computes in float32 whatever the data (PyTorch's float scale).
                F = np.float32 if self.code == NEAREST else T
                found.append(T(F(1.0 / factor) if factor is not None else F(n) / F(o)))
        return found[0], found[1]

    def _axis(self, ctx: Ctx, size: int, out: int, scale: Any) -> tuple[Any, Any, Any]:
        """One axis' tables, filled on the node's device (see upsample_cpu.py): each output
        index's two source indices and weights, and where each input index's readers start."""
        index, weight, starts = ctx.empty((2, out), np.int64), ctx.empty((2, out)), ctx.empty((size + 1,), np.int64)
        ctx.kernels.upsample_axis(size, scale, self.code, index, weight, starts)
        return index, weight, starts

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N, C, H, W = x.shape
        P, Q = self._out_size(H, W)
        sh, sw = self._scales((H, W), (P, Q), x.dtype)
        rows, cols = self._axis(ctx, H, P, sh), self._axis(ctx, W, Q, sw)
        y = ctx.empty((N, C, P, Q))
        ctx.kernels.upsample_forward(x, self.code, *rows[:2], *cols[:2], y)
        ctx.save(tuple(x.shape), rows, cols)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        if not ctx.needs_input_grad[0]:
            return None
        x_shape, rows, cols = ctx.saved
        gx = ctx.empty(x_shape)
        ctx.kernels.upsample_backward_input(gy, self.code, *rows, *cols, gx)
        return gx
