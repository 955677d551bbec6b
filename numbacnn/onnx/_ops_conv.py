"""Convolutions both ways: conv1d/conv2d/conv3d <-> Conv, conv_transpose2d <-> ConvTranspose,
and Pad, which is folded into the convolution or pooling that reads it.

ONNX pads list every axis's start, then every axis's end ([top, left, bottom, right] in 2-D);
numbacnn's explicit 2-D padding is (top, bottom, left, right), and per-axis (begin, end)
pairs in general.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..layers._conv_geometry import padding4
from ._table import exports, imports

CONV_LAYERS = {1: "conv1d", 2: "conv2d", 3: "conv3d"}


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    """A size given as an int or a sequence (PyTorch's convention) as an n-tuple."""
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * n


def layer_pads(padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> list[int]:
    """A layer's ``padding`` config as ONNX pads (begins, then ends)."""
    n = len(kernel)
    if n == 2:
        t, b, l, r = padding4(padding, tuple(kernel), tuple(stride), tuple(dilation))
        return [t, l, b, r]
    if padding == "valid":
        return [0] * (2 * n)
    if padding == "same":  # as padding4: the odd pixel of an even total goes to the end
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    if isinstance(padding, (list, tuple)) and len(padding) == 2 * n:  # (begin, end) per axis; conv1d's (left, right)
        return [int(p) for p in padding[0::2]] + [int(p) for p in padding[1::2]]
    p = ntuple(padding, n)
    return [*p, *p]


def config_pads(pads: Sequence[int]) -> Any:
    """ONNX pads as a layer's ``padding``: per-axis sizes when symmetric, else (begin, end)
    pairs per axis ((top, bottom, left, right) in 2-D)."""
    n = len(pads) // 2
    begins, ends = list(pads[:n]), list(pads[n:])
    if begins == ends:
        return begins[0] if len(set(begins)) == 1 else tuple(begins)
    return tuple(v for pair in zip(begins, ends) for v in pair)


# export ------------------------------------------------------------------------------------
@exports("conv1d", "conv2d", "conv3d")
def conv_out(ctx: Any) -> None:
    c = ctx.config
    n = int(ctx.layer.name[-2])
    kernel, stride = ntuple(c["kernel_size"], n), ntuple(c.get("stride", 1), n)
    dilation = ntuple(c.get("dilation", 1), n)
    ins = [ctx.inputs[0], ctx.param("weight")] + ([ctx.param("bias")] if c.get("bias", True) else [])
    ctx.add("Conv", ins, last=True, kernel_shape=list(kernel), strides=list(stride), dilations=list(dilation),
            pads=layer_pads(c.get("padding", 0), kernel, stride, dilation), group=int(c.get("groups", 1)))


@exports("conv_transpose2d")
def conv_transpose_out(ctx: Any) -> None:
    c = ctx.config
    kernel, stride = ntuple(c["kernel_size"], 2), ntuple(c.get("stride", 1), 2)
    pad, out_pad = ntuple(c.get("padding", 0), 2), ntuple(c.get("output_padding", 0), 2)
    ins = [ctx.inputs[0], ctx.param("weight")] + ([ctx.param("bias")] if c.get("bias", True) else [])
    ctx.add("ConvTranspose", ins, last=True, kernel_shape=list(kernel), strides=list(stride),
            dilations=list(ntuple(c.get("dilation", 1), 2)), pads=[*pad, *pad], output_padding=list(out_pad),
            group=int(c.get("groups", 1)))


# import ------------------------------------------------------------------------------------
def onnx_pads(ctx: Any, spatial: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
              dilation: Sequence[int]) -> list[int]:
    """The node's pads (begins then ends), ``auto_pad`` resolved against the input's sizes."""
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(ctx.attr("pads", [0] * (2 * n)))
    if auto == "VALID":
        return [0] * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(f"auto_pad={auto!r} is not supported (supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER)")
    def total(size: int, k: int, s: int, d: int) -> int:
        return max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)

    begins, ends, varying = [], [], []
    for size, k, s, d in zip(spatial, kernel, stride, dilation):
        t = total(size, k, s, d)
        small, big = t // 2, t - t // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
        if any(total(size + r, k, s, d) != t for r in range(1, s)):  # strided: the padding follows size % s
            varying.append(size)
    if varying:
        ctx.depends_on_size(f"auto_pad={auto} with strides {list(stride)}: its padding", tuple(varying))
    return begins + ends


def take_pad(ctx: Any, value: Any, pads: list[int], fill: float = 0.0) -> list[int]:
    """Add a pending Pad's sizes (filled with ``fill``) to ``pads``."""
    if value.pads is None:
        return pads
    begins, ends, pad_fill, who = value.pads
    if pad_fill != fill:
        raise ctx.fail(f"it reads Pad node '{who}', which pads with {pad_fill}; a {ctx.op_type} pads with "
                       f"{fill}, so numbacnn cannot fold that Pad into it")
    n = len(pads) // 2
    if len(begins) != n:
        raise ctx.fail(f"Pad node '{who}' pads {len(begins)} spatial axes, this node has {n}")
    return [p + q for p, q in zip(pads, [*begins, *ends])]


@imports("Conv")
def conv_in(ctx: Any) -> None:
    ctx.expect_attrs(["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])
    x = ctx.value(0, pads_ok=True)
    w = ctx.const(1, what="the weight")
    b = ctx.const(2, what="the bias")
    n = w.ndim - 2
    if n not in CONV_LAYERS:
        raise ctx.fail(f"a {n}-D convolution; numbacnn has conv1d, conv2d and conv3d")
    kernel = tuple(int(k) for k in w.shape[2:])
    if tuple(ctx.attr("kernel_shape", kernel)) != kernel:
        raise ctx.fail(f"kernel_shape {ctx.attr('kernel_shape')} differs from the weight's {kernel}")
    stride, dilation = ntuple(ctx.attr("strides", 1), n), ntuple(ctx.attr("dilations", 1), n)
    pads = take_pad(ctx, x, onnx_pads(ctx, x.onnx_shape[1:], kernel, stride, dilation))
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    ctx.layer(CONV_LAYERS[n], [x], params=params, out_channels=int(w.shape[0]), kernel_size=kernel,
              stride=stride, padding=config_pads(pads), dilation=dilation, groups=int(ctx.attr("group", 1)),
              bias=b is not None)


@imports("ConvTranspose")
def conv_transpose_in(ctx: Any) -> None:
    ctx.expect_attrs(["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads",
                      "strides"])
    x = ctx.value(0)
    w = ctx.const(1, what="the weight")
    b = ctx.const(2, what="the bias")
    if w.ndim != 4:
        raise ctx.fail(f"a {w.ndim - 2}-D transposed convolution; numbacnn has conv_transpose2d")
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        raise ctx.fail(f"auto_pad={ctx.attr('auto_pad')!r} is not supported (supported: NOTSET, VALID)")
    kernel, group = tuple(int(k) for k in w.shape[2:]), int(ctx.attr("group", 1))
    stride, dilation = ntuple(ctx.attr("strides", 1), 2), ntuple(ctx.attr("dilations", 1), 2)
    pads = list(ctx.attr("pads", [0, 0, 0, 0])) if ctx.attr("auto_pad", "NOTSET") != "VALID" else [0, 0, 0, 0]
    if pads[:2] != pads[2:]:
        raise ctx.fail(f"asymmetric pads {pads}; conv_transpose2d pads both sides alike")
    out_pad = list(ntuple(ctx.attr("output_padding", 0), 2))
    if ctx.attr("output_shape") is not None:
        want = list(ctx.attr("output_shape"))[-2:]
        out_pad = [o - ((i - 1) * s - 2 * p + d * (k - 1) + 1) for o, i, s, p, d, k in
                   zip(want, x.onnx_shape[1:], stride, pads[:2], dilation, kernel)]
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    ctx.layer("conv_transpose2d", [x], params=params, out_channels=int(w.shape[1]) * group, kernel_size=kernel,
              stride=stride, padding=tuple(pads[:2]), output_padding=tuple(out_pad), groups=group,
              bias=b is not None, dilation=dilation)


@imports("Pad")
def pad_in(ctx: Any) -> None:
    ctx.expect_attrs(["mode"])
    if ctx.attr("mode", "constant") != "constant":
        raise ctx.fail(f"mode={ctx.attr('mode')!r}; numbacnn folds only constant padding (into the Conv or pool "
                       f"that reads it)")
    x = ctx.value(0)
    if x.shape != x.onnx_shape:
        raise ctx.fail(f"numbacnn holds its input as {x.shape}, ONNX as {x.onnx_shape}")
    rank = len(x.onnx_shape) + 1
    pads = [int(p) for p in ctx.const(1, what="pads").ravel()]
    fill = ctx.const(2, default=np.zeros(()), what="the constant value")
    axes = ctx.const(3, default=np.arange(rank), what="axes")
    full = [0] * (2 * rank)
    for k, axis in enumerate(int(a) % rank for a in np.ravel(axes)):
        full[axis], full[rank + axis] = pads[k], pads[len(pads) // 2 + k]
    if full[0] or full[1] or full[rank] or full[rank + 1] or min(full) < 0:
        raise ctx.fail(f"pads {pads}: numbacnn folds only non-negative padding of the spatial axes")
    ctx.pad(x, (tuple(full[2:rank]), tuple(full[rank + 2:]), float(np.ravel(fill)[0]) if np.size(fill) else 0.0))
