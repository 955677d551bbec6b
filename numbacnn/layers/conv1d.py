"""conv1d: 1-D convolution (cross-correlation) over sequences, as torch.nn.Conv1d.

A 1-D convolution is a 2-D one with a height of 1: the layer is Conv2d on (N, C, 1, L) views
with a (1, kernel) window, so it takes conv2d's kernels and its choice of CPU path as they
are (channel-major im2col: conv2d_plan keeps one-row convolutions off the pixel-major path;
5-tap stride-1 ones with 32 channels or more take Winograd F(4, 5), conv1d_winograd_cpu).
Only the weight's stored shape differs, (K, C/groups, kernel) as PyTorch's, so checkpoints and
ONNX files match it;
forward and backward hand conv2d a (K, C/groups, 1, kernel) view of it and of its gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..layer import Ctx, Shape, ShapeError
from ._conv_geometry import grouped_input, ntuple, out_size, padding4
from .conv2d import Conv2d


def _padding2(padding: Any, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(left, right) from an int, a 1-tuple, (left, right), "valid" or "same"."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        padding = (0, 0, *padding)  # explicit (left, right): conv2d's (top, bottom, left, right)
    elif isinstance(padding, (tuple, list)) and len(padding) != 1:
        raise TypeError(f"padding must be an int, a 1-tuple, (left, right), 'same' or 'valid', found {padding!r}")
    elif not isinstance(padding, str):
        padding = (0, ntuple(padding, "padding", 1, minimum=0)[0])
    if padding == "same" and stride != 1:
        raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), found stride={stride}")
    return padding4(padding, (1, kernel), (1, stride), (1, dilation))[2:]  # type: ignore[return-value]


class Conv1d(Conv2d):
    """Cross-correlation of each group of input channels with that group's filters, plus a bias.

    (C, L) -> (K, L') with K = out_channels; weight (K, C/groups, kernel_size), bias (K,).
    """

    name = "conv1d"
    kernels = "numbacnn.layers.conv2d"

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        (k,) = ntuple(kernel_size, "kernel_size", 1)
        (s,) = ntuple(stride, "stride", 1)
        (d,) = ntuple(dilation, "dilation", 1)
        super().__init__(out_channels, (1, k), (1, s), (0, 0, *_padding2(padding, k, s, d)), (1, d), groups, bias)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check conv1d`` (and ``numbacnn warmup``)."""
        return [
            {"config": {"out_channels": 4, "kernel_size": 3, "padding": (1, 0)}, "input_shapes": [(2, 3, 7)],
             "bad_shapes": [([(2, 3, 1)], "shorter than the kernel"),
                            ([(2, 3, 4, 4)], "expected a (C, L) input")]},
            {"config": {"out_channels": 4, "kernel_size": 2, "stride": 2, "dilation": 2, "groups": 2},
             "input_shapes": [(2, 2, 8)], "bad_shapes": [([(2, 3, 8)], "groups=2 does not divide")]},
            {"config": {"out_channels": 3, "kernel_size": 1, "bias": False}, "input_shapes": [(2, 4, 5)]},
            # enough input channels for conv2d's pixel-major path, which conv1d leaves (conv2d_plan)
            {"config": {"out_channels": 4, "kernel_size": 5, "padding": "same"}, "input_shapes": [(2, 6, 9)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        C, L = grouped_input(x_shape, self.groups, dims=1)
        (_, k), (_, s), (_, d), (_, _, pl, pr) = self.kernel, self.stride, self.dilation, self.pads
        out = out_size(L, k, s, (pl, pr), d)
        if out < 1:
            raise ShapeError(f"input of length {L} padded to {L + pl + pr} is shorter than the kernel's extent "
                             f"{d * (k - 1) + 1} (kernel {k}, dilation {d}): expected a padded length of at "
                             f"least that, found {L + pl + pr}")
        return self.out_channels, out

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        params = super().init_params([(input_shapes[0][0], 1, input_shapes[0][1])], rng)
        params["weight"] = params["weight"][:, :, 0, :].copy()
        return params

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, L = input_shapes[0]
        return super().flops([(C, 1, L)], (output_shape[0], 1, output_shape[1]))

    def _weight(self, arrays: dict[str, Any]) -> Any:
        w = arrays["weight"]
        return w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])

    def forward(self, ctx: Ctx, x: Any) -> Any:
        N, C, L = x.shape
        y = super().forward(ctx, x.reshape(N, C, 1, L))
        return y.reshape(N, y.shape[1], y.shape[3])

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        N, K, Q = gy.shape
        gx = super().backward(ctx, gy.reshape(N, K, 1, Q))
        return None if gx is None else gx.reshape(gx.shape[0], gx.shape[1], gx.shape[3])
