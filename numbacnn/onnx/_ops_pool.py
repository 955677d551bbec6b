"""Pooling both ways: max/avg pools (1-D to 3-D) <-> MaxPool/AveragePool, lp_pool2d <-> LpPool,
global pools <-> GlobalAveragePool/GlobalMaxPool (+ Flatten: numbacnn's give (N, C)), and
adaptive pools as the fixed pools they are at the exported size.

The AveragePool trap: ONNX's ``count_include_pad`` defaults to 0, PyTorch's (and numbacnn's)
to True, so export always writes it and import reads ONNX's default.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._ops_conv import ntuple, onnx_pads, take_pad
from ._table import exports, imports

MAX_POOLS = {1: "max_pool1d", 2: "max_pool2d", 3: "max_pool3d"}
AVG_POOLS = {1: "avg_pool1d", 2: "avg_pool2d", 3: "avg_pool3d"}


def _window(ctx: Any) -> tuple[int, tuple[int, ...], tuple[int, ...], list[int]]:
    c = ctx.config
    n = int(ctx.layer.name[-2])
    kernel = ntuple(c["kernel_size"], n)
    stride = kernel if c.get("stride") is None else ntuple(c["stride"], n)
    pad = ntuple(c.get("padding", 0), n)
    return n, kernel, stride, [*pad, *pad]


def _floor_and_ceil(size: int, k: int, s: int, pad: int, d: int = 1) -> tuple[int, int]:
    """An axis's output size rounded down, and up without PyTorch's rule that drops a last
    window starting in the padding (which onnx's shape inference lacks; onnxruntime has it)."""
    span = size + 2 * pad - d * (k - 1) - 1
    return span // s + 1, -(-span // s) + 1


def _ceil_attr(ctx: Any, kernel: tuple[int, ...], stride: tuple[int, ...], pads: list[int],
               dilation: tuple[int, ...]) -> int:
    """ceil_mode as ONNX must read it: 0 where rounding up adds no window at this size (a
    window PyTorch drops included), 1 where it adds one on every axis it changes."""
    if not ctx.config.get("ceil_mode", False):
        return 0
    sizes, out = ctx.input_shapes[0][1:], ctx.output_shape[1:]
    if any(v is None for v in sizes):
        return 1  # onnxruntime and the spec drop windows starting in the padding, as PyTorch
    rounded = [_floor_and_ceil(m, k, s, p, d) for m, k, s, p, d in zip(sizes, kernel, stride, pads, dilation)]
    if all(o == f for o, (f, _) in zip(out, rounded)):
        return 0
    if all(o == c for o, (_, c) in zip(out, rounded)):
        return 1
    raise ctx.fail(f"ceil_mode from input size {tuple(sizes)}: PyTorch drops a last window starting in the padding "
                   f"on some axes and keeps a partial one on others, which one ONNX ceil_mode cannot say")


# export ------------------------------------------------------------------------------------
@exports("max_pool1d", "max_pool2d", "max_pool3d")
def max_pool_out(ctx: Any) -> None:
    n, kernel, stride, pads = _window(ctx)
    dilation = ntuple(ctx.config.get("dilation", 1), n)
    ctx.add("MaxPool", ctx.inputs, last=True, kernel_shape=list(kernel), strides=list(stride), pads=pads,
            dilations=list(dilation), ceil_mode=_ceil_attr(ctx, kernel, stride, pads, dilation))


@exports("avg_pool1d", "avg_pool2d", "avg_pool3d")
def avg_pool_out(ctx: Any) -> None:
    n, kernel, stride, pads = _window(ctx)
    divisor = ctx.config.get("divisor_override")
    ceil = bool(ctx.config.get("ceil_mode", False))
    if divisor is not None and ceil:
        raise ctx.fail("divisor_override with ceil_mode has no ONNX form (AveragePool has no divisor)")
    include = True if divisor is not None else bool(ctx.config.get("count_include_pad", True))
    y = ctx.add("AveragePool", ctx.inputs, last=divisor is None, kernel_shape=list(kernel), strides=list(stride),
                pads=pads, ceil_mode=_ceil_attr(ctx, kernel, stride, pads, (1,) * n), count_include_pad=int(include))
    if divisor is not None:  # the window's sum over the divisor: the mean times size / divisor
        ctx.add("Mul", [y, ctx.constant(np.prod(kernel) / divisor, "divisor_scale")], last=True)


@exports("global_avg_pool2d", "global_max_pool2d")
def global_pool_out(ctx: Any) -> None:
    op = "GlobalAveragePool" if ctx.layer.name == "global_avg_pool2d" else "GlobalMaxPool"
    ctx.add("Flatten", [ctx.add(op, ctx.inputs)], last=True, axis=1)


def _lp_partial_windows(sizes: Any, kernel: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether rounding up adds a partial window at the edge: PyTorch scales its sum by the
    window's size over its count, ONNX's LpPool does not, so numbacnn refuses it both ways."""
    return any(m is None and s > 1 or m is not None and len(set(_floor_and_ceil(m, k, s, 0))) > 1
               for m, k, s in zip(sizes, kernel, stride))


def _lp_even(p: float) -> bool:
    """ONNX's LpPool is (sum |x|^p)^(1/p), PyTorch's (sum x^p)^(1/p): equal for even p only."""
    return math.isfinite(p) and p == int(p) and int(p) % 2 == 0 and p > 0


@exports("lp_pool2d")
def lp_pool_out(ctx: Any) -> None:
    c = ctx.config
    p = float(c.get("norm_type", 2))
    if not _lp_even(p):
        raise ctx.fail(f"norm_type={c.get('norm_type')}: ONNX's LpPool computes (sum |x|^p)^(1/p), PyTorch's "
                       f"lp_pool2d (sum x^p)^(1/p); they agree for even positive integer p only")
    kernel = ntuple(c["kernel_size"], 2)
    stride = kernel if c.get("stride") is None else ntuple(c["stride"], 2)
    if c.get("ceil_mode", False) and _lp_partial_windows(ctx.input_shapes[0][1:], kernel, stride):
        raise ctx.fail(f"ceil_mode adds a partial window at the edge of input size {ctx.input_shapes[0][1:]} (or "
                       f"may, the size being free): PyTorch scales its sum by the window's size over its count, "
                       f"ONNX's LpPool does not")
    ctx.add("LpPool", ctx.inputs, last=True, p=int(p), kernel_shape=list(kernel), strides=list(stride))


@exports("adaptive_avg_pool2d", "adaptive_max_pool2d")
def adaptive_pool_out(ctx: Any) -> None:
    avg = ctx.layer.name == "adaptive_avg_pool2d"
    size = ctx.config["output_size"]
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    spatial = ctx.input_shapes[0][1:]
    want = tuple(s if o is None else o for o, s in zip(size, spatial))
    if want == (1, 1):
        ctx.add("GlobalAveragePool" if avg else "GlobalMaxPool", ctx.inputs, last=True)
        return
    if any(s is None or s % o for s, o in zip(spatial, want)):
        raise ctx.fail(f"output_size {want} from input size {spatial}: ONNX has no adaptive pooling; only a 1x1 "
                       f"output or an input size divisible by the output size has an ONNX form")
    kernel = [s // o for s, o in zip(spatial, want)]
    if avg:
        ctx.add("AveragePool", ctx.inputs, last=True, kernel_shape=kernel, strides=kernel, count_include_pad=0)
    else:
        ctx.add("MaxPool", ctx.inputs, last=True, kernel_shape=kernel, strides=kernel)


# import ------------------------------------------------------------------------------------
def _pool_geometry(ctx: Any, x: Any, fill: float) -> tuple[int, tuple[int, ...], tuple[int, ...], Any]:
    kernel = tuple(int(k) for k in ctx.attr("kernel_shape"))
    n = len(kernel)
    stride = ntuple(ctx.attr("strides", 1), n)
    dilation = ntuple(ctx.attr("dilations", 1), n)
    pads = onnx_pads(ctx, x.onnx_shape[1:], kernel, stride, dilation)
    pads = take_pad(ctx, x, pads, fill)
    if pads[:n] != pads[n:]:
        raise ctx.fail(f"asymmetric pads {pads}; numbacnn's pools pad both sides of an axis alike")
    return n, kernel, stride, tuple(pads[:n])


@imports("MaxPool")
def max_pool_in(ctx: Any) -> None:
    ctx.expect_attrs(["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"])
    x = ctx.value(0, pads_ok=True)
    n, kernel, stride, pad = _pool_geometry(ctx, x, float("-inf"))
    if n not in MAX_POOLS:
        raise ctx.fail(f"a {n}-D max pooling; numbacnn has 1-D to 3-D")
    ctx.layer(MAX_POOLS[n], [x], kernel_size=kernel, stride=stride, padding=pad,
              dilation=ntuple(ctx.attr("dilations", 1), n), ceil_mode=bool(ctx.attr("ceil_mode", 0)))


@imports("AveragePool")
def avg_pool_in(ctx: Any) -> None:
    ctx.expect_attrs(["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"])
    x = ctx.value(0, pads_ok=True)
    include = bool(ctx.attr("count_include_pad", 0))  # ONNX's default, unlike PyTorch's
    if x.pads is not None:
        if (any(ctx.attr("pads", [])) or ctx.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")) \
                and not include:
            raise ctx.fail(f"it reads Pad node '{x.pads[3]}' and pads again with count_include_pad=0; numbacnn "
                           f"counts all padding or none")
        include = True  # an explicit Pad's zeros are input: they count
    n, kernel, stride, pad = _pool_geometry(ctx, x, 0.0)
    if n not in AVG_POOLS:
        raise ctx.fail(f"a {n}-D average pooling; numbacnn has 1-D to 3-D")
    if any(d != 1 for d in ntuple(ctx.attr("dilations", 1), n)):
        raise ctx.fail(f"dilations {ctx.attr('dilations')}; numbacnn's average pools are not dilated")
    ctx.layer(AVG_POOLS[n], [x], kernel_size=kernel, stride=stride, padding=pad,
              ceil_mode=bool(ctx.attr("ceil_mode", 0)), count_include_pad=include)


@imports("Mul")
def mul_in(ctx: Any) -> None:
    """Only as export writes divisor_override: an average pool's output times a constant."""
    ctx.expect_attrs([])
    consts = [i for i in (0, 1) if ctx.is_const(i)]
    if len(consts) != 1:
        raise ctx.fail("Mul is supported only as the divisor of the AveragePool before it (an AveragePool's "
                       "output times a constant scalar)")
    v = ctx.value(1 - consts[0], exact=False)
    scale = ctx.const(consts[0])
    rec = ctx.producer(v)
    if (rec is None or rec.layer not in AVG_POOLS.values() or np.size(scale) != 1 or ctx.readers_of(1 - consts[0]) != 1
            or rec.config.get("ceil_mode") or not rec.config.get("count_include_pad")):
        raise ctx.fail("Mul is supported only as the divisor of the AveragePool before it (an AveragePool's "
                       "output, read by nothing else, times a constant scalar)")
    divisor = np.prod(ntuple(rec.config["kernel_size"], len(v.onnx_shape) - 1)) / float(np.ravel(scale)[0])
    if abs(divisor - round(divisor)) > 1e-4 or round(divisor) < 1:
        raise ctx.fail(f"an AveragePool times {float(np.ravel(scale)[0])} is a divisor of {divisor}; numbacnn's "
                       f"divisor_override is a positive integer")
    rec.config["divisor_override"] = int(round(divisor))
    ctx.alias(v)


def _global(ctx: Any, layer: str, keepdims: bool = True) -> None:
    x = ctx.value(0)
    if len(x.onnx_shape) != 3:
        raise ctx.fail(f"a global pooling of a {len(x.onnx_shape) + 1}-D input; numbacnn's are 2-D (N, C, H, W)")
    ctx.layer(layer, [x], onnx_shape=(x.onnx_shape[0], 1, 1) if keepdims else (x.onnx_shape[0],))


@imports("GlobalAveragePool")
def global_avg_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    _global(ctx, "global_avg_pool2d")


@imports("GlobalMaxPool")
def global_max_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    _global(ctx, "global_max_pool2d")


@imports("ReduceMean", "ReduceMax")
def reduce_in(ctx: Any) -> None:
    """Over the spatial axes of (N, C, H, W) data only: a global pooling."""
    ctx.expect_attrs(["axes", "keepdims", "noop_with_empty_axes"])
    x = ctx.value(0)
    axes = ctx.const(1, what="axes") if ctx.has(1) else ctx.attr("axes")
    rank = len(x.onnx_shape) + 1
    if axes is None or rank != 4 or sorted(int(a) % rank for a in np.ravel(axes)) != [2, 3]:
        raise ctx.fail(f"a reduction over axes {None if axes is None else list(np.ravel(axes))} of a {rank}-D "
                       f"input; numbacnn reduces only the spatial axes (2, 3) of (N, C, H, W) data (a global pooling)")
    _global(ctx, "global_avg_pool2d" if ctx.op_type == "ReduceMean" else "global_max_pool2d",
            bool(ctx.attr("keepdims", 1)))


@imports("LpPool")
def lp_pool_in(ctx: Any) -> None:
    ctx.expect_attrs(["auto_pad", "ceil_mode", "dilations", "kernel_shape", "p", "pads", "strides"])
    x = ctx.value(0)
    n, kernel, stride, pad = _pool_geometry(ctx, x, 0.0)
    if n != 2 or any(pad) or any(d != 1 for d in ntuple(ctx.attr("dilations", 1), n)):
        raise ctx.fail("numbacnn's lp_pool2d is 2-D, without padding or dilation")
    p = float(ctx.attr("p", 2))
    if not _lp_even(p):
        raise ctx.fail(f"p={ctx.attr('p', 2)}: ONNX's LpPool is (sum |x|^p)^(1/p), numbacnn's lp_pool2d PyTorch's "
                       f"(sum x^p)^(1/p); they agree for even p only")
    if ctx.attr("ceil_mode", 0):
        if _lp_partial_windows(x.onnx_shape[1:], kernel, stride):
            raise ctx.fail(f"ceil_mode adds a partial window at the edge of input size {x.onnx_shape[1:]}: ONNX's "
                           f"LpPool sums it, PyTorch's (numbacnn's) lp_pool2d scales it by the window's size")
        # no partial window at this size: ceil_mode changes nothing, unless the size is free
        ctx.depends_on_size("ceil_mode: whether it adds a partial window",
                            tuple(m for m, s in zip(x.onnx_shape[1:], stride) if s > 1))
    ctx.layer("lp_pool2d", [x], norm_type=p, kernel_size=kernel, stride=stride)
