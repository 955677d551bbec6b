"""spp: spatial pyramid pooling (He et al. 2014, SPP-net).

For every level l, the input plane is split into an l x l grid of bins and each bin is
max-pooled; the levels' (C, l, l) results are flattened and concatenated, level after level,
so any input size gives C * sum(l * l) features. Bin i of a level spans rows
floor(i * H / l) .. ceil((i + 1) * H / l) (exclusive), as torch.nn.AdaptiveMaxPool2d splits
them: bins may overlap, and a plane smaller than the grid repeats rows. The gradient goes to
the first maximum of each bin (its last NaN if it holds any, as in PyTorch), which forward
records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from numbacnn import Ctx, Layer, ShapeError

if TYPE_CHECKING:
    from numbacnn.onnx import ExportCtx, ImportCtx

Shape = tuple[int, ...]


class SPP(Layer):
    """Spatial pyramid (max) pooling over l x l grids per level. (C, H, W) -> (C * sum(l * l),)."""

    name = "spp"
    onnx_ops = (("ai.numbacnn", "SPP"),)

    def __init__(self, levels: Sequence[int] = (1, 2, 4)) -> None:
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
            raise TypeError(f"levels must be a non-empty sequence of ints, found {levels!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
            raise TypeError(f"levels must be a non-empty sequence of ints, found {levels!r}")
        if any(v < 1 for v in levels):
            raise ValueError(f"levels must be at least 1, found {list(levels)}")
        self.levels = tuple(levels)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """What ``numbacnn layers --check spp`` runs the conformance kit on."""
        return [
            {"config": {"levels": [1, 2, 4]}, "input_shapes": [(2, 3, 7, 9)],
             "bad_shapes": [([(2, 3, 7)], "expected an input of shape (C, H, W)")]},
            {"config": {"levels": [1, 2, 4]}, "input_shapes": [(2, 2, 3, 2)]},
        ]

    def output_shape(self, x_shape: Shape) -> Shape:
        if len(x_shape) != 3:
            raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
        return (x_shape[0] * sum(level * level for level in self.levels),)

    def flops(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        C, H, W = input_shapes[0]
        return C * H * W * len(self.levels)  # one comparison per element and level (bins overlap little)

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty((x.shape[0], self.output_shape(x.shape[1:])[0]))
        idx = ctx.empty(y.shape, np.int32)
        ctx.kernels.spp_forward(x, self.levels, y, idx)
        ctx.save(x, idx)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        x, idx = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty(x.shape)
        ctx.kernels.spp_backward_input(gy, idx, self.levels, gx)
        return gx

    # ONNX: the function ai.numbacnn.SPP(X; levels) of standard operators, one body per levels
    # (its overload "levels_1_2_4"), any input size. Per level l and axis, a (l, size) mask
    # marks each bin's rows; Where puts -inf outside the bin and ReduceMax takes the bin's
    # maximum, rows first, then columns.
    def onnx_export(self, ctx: ExportCtx) -> None:
        h, nodes = ctx.helper, []

        def node(op: str, ins: list[str], **attrs: Any) -> str:
            nodes.append(h.make_node(op, ins, [f"t{len(nodes)}"], **attrs))
            return nodes[-1].output[0]

        def ints(values: list[int], dims: list[int] | None = None) -> str:
            return node("Constant", [], value=h.make_tensor("v", 7, [len(values)] if dims is None else dims, values))

        def reduce_max(x: str, axis: int) -> str:
            if ctx.opset >= 18:
                return node("ReduceMax", [x, ints([axis])], keepdims=0)
            return node("ReduceMax", [x], axes=[axis], keepdims=0)

        def bins(level: int, size: str) -> str:  # (level, size): bin i holds floor(i*n/l) .. ceil((i+1)*n/l)
            i, n = ints(list(range(level))), ints([level])
            start = node("Div", [node("Mul", [i, size]), n])
            end = node("Div", [node("Add", [node("Mul", [node("Add", [i, ints([1])]), size]), ints([level - 1])]), n])
            pos = node("Unsqueeze", [node("Range", [ints([0], []), node("Squeeze", [size]), ints([1], [])]), ints([0])])
            return node("And", [node("GreaterOrEqual", [pos, node("Unsqueeze", [start, ints([1])])]),
                                node("Less", [pos, node("Unsqueeze", [end, ints([1])])])])

        shape = node("Shape", ["X"])
        height, width = (node("Slice", [shape, ints([a]), ints([a + 1])]) for a in (2, 3))
        neg = node("Cast", [node("Constant", [], value_float=float("-inf"))], to=ctx.elem_type)
        outs = []
        for level in self.levels:
            rows = node("Where", [node("Unsqueeze", [bins(level, height), ints([2])]),
                                  node("Unsqueeze", ["X", ints([2])]), neg])             # (N, C, l, H, W)
            cols = node("Where", [bins(level, width), node("Unsqueeze", [reduce_max(rows, 3), ints([3])]), neg])
            outs.append(node("Flatten", [reduce_max(cols, 4)], axis=1))                  # (N, C * l * l)
        nodes.append(h.make_node("Concat", outs, ["Y"], axis=1))
        overload = "levels_" + "_".join(map(str, self.levels))
        ctx.function(h.make_function("ai.numbacnn", "SPP", ["X"], ["Y"], nodes, [h.make_opsetid("", ctx.opset)],
                                     attributes=["levels"], overload=overload))
        ctx.add("SPP", ctx.inputs, domain="ai.numbacnn", overload=overload, last=True, levels=list(self.levels))

    @classmethod
    def onnx_import(cls, ctx: ImportCtx) -> None:
        ctx.expect_attrs(["levels"])
        ctx.layer("spp", [ctx.value(0)], levels=tuple(int(v) for v in ctx.attr("levels", (1, 2, 4))))
