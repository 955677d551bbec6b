"""Joins, reshapes, fully connected layers and resizing, both ways.

linear <-> Gemm (transB=1), and MatMul by a constant, whose bias comes from the Add of a
constant that follows it; flatten <-> Flatten, and Reshape / Squeeze / Unsqueeze where the
target is flat or only adds or drops size-1 axes (numbacnn has no general reshape); add <->
Add / Sum; concat <-> Concat on channels; Identity is dropped; upsample <-> Resize.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._fold import BATCH
from ._table import exports, imports


@exports("flatten")
def flatten_out(ctx: Any) -> None:
    ctx.add("Flatten", ctx.inputs, last=True, axis=1)


@exports("linear")
def linear_out(ctx: Any) -> None:
    ins = [ctx.inputs[0], ctx.param("weight")] + ([ctx.param("bias")] if ctx.config.get("bias", True) else [])
    ctx.add("Gemm", ins, last=True, transB=1)


@exports("add")
def add_out(ctx: Any) -> None:
    ctx.add("Add" if len(ctx.inputs) == 2 else "Sum", ctx.inputs, last=True)


@exports("concat")
def concat_out(ctx: Any) -> None:
    ctx.add("Concat", ctx.inputs, last=True, axis=int(ctx.config.get("dim", 1)))


@exports("upsample")
def upsample_out(ctx: Any) -> None:
    c = ctx.config
    bilinear = c.get("mode", "nearest") == "bilinear"
    attrs: dict[str, Any] = {"mode": "linear" if bilinear else "nearest"}
    if bilinear:
        attrs["coordinate_transformation_mode"] = "align_corners" if c.get("align_corners") else "half_pixel"
    else:
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    size = c.get("size")
    if size is None and c.get("recompute_scale_factor"):
        # PyTorch then resizes to floor(size * scale) as if that size were given (its source
        # pixels follow the ratio of the sizes, not the scale): the same as the scale for an
        # integer scale, else a Resize to the output's size
        s = c["scale_factor"]
        if any(float(v) != int(v) for v in (s if isinstance(s, (list, tuple)) else (s,))):
            if ctx.shape_free():
                raise ctx.fail("recompute_scale_factor=True with a non-integer scale_factor resizes to a size "
                               "computed from the input's, which is free here; ONNX's Resize by scales reads "
                               "source pixels at the scale itself")
            size = ctx.output_shape[1:]
    if size is not None:
        size = size if isinstance(size, (list, tuple)) else (size, size)
        if ctx.opset >= 18:
            ctx.add("Resize", [ctx.inputs[0], "", "", ctx.constant(np.array(size), "sizes")], last=True,
                    axes=[2, 3], **attrs)
            return
        if ctx.shape_free():
            raise ctx.fail("upsample to a size from a free input size needs opset 18 or newer (Resize's axes)")
        scales = [1.0, 1.0] + [o / i for o, i in zip(size, ctx.input_shapes[0][1:])]
    else:
        s = c["scale_factor"]
        scales = [1.0, 1.0, *(map(float, s) if isinstance(s, (list, tuple)) else (float(s),) * 2)]
    ctx.add("Resize", [ctx.inputs[0], "", ctx.constant(np.array(scales, np.float32), "scales", dtype=np.float32)],
            last=True, **attrs)


# import ------------------------------------------------------------------------------------
def _drop_ones(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def reshape_to(ctx: Any, x: Any, target: tuple[int, ...]) -> None:
    """Output 0 is ``x`` with per-sample shape ``target``: the same data, a flatten layer, or
    the same numbacnn value seen with size-1 axes added or dropped."""
    if math.prod(target) != math.prod(x.onnx_shape):
        raise ctx.fail(f"reshape of {x.onnx_shape} to {target} per sample: the sizes differ")
    if target == x.shape:
        ctx.alias(type(x)(x.node, x.shape, target))
    elif len(target) == 1:
        ctx.layer("flatten", [x])
    elif _drop_ones(target) == _drop_ones(x.shape) and (len(x.shape) == 1 or len(_drop_ones(x.shape)) <= 1):
        ctx.alias(type(x)(x.node, x.shape, target))
    else:
        raise ctx.fail(f"reshape of {x.onnx_shape} to {target} per sample; numbacnn has no general reshape layer, only "
                       f"flattening to (N, features) (and adding or dropping size-1 axes of flat data)")


@imports("Flatten")
def flatten_in(ctx: Any) -> None:
    ctx.expect_attrs(["axis"])
    x = ctx.value(0, exact=False)
    if int(ctx.attr("axis", 1)) % (len(x.onnx_shape) + 1) != 1:
        raise ctx.fail(f"axis={ctx.attr('axis')}; numbacnn flattens everything after the batch axis (axis=1)")
    reshape_to(ctx, x, (math.prod(x.onnx_shape),))


@imports("Reshape")
def reshape_in(ctx: Any) -> None:
    ctx.expect_attrs(["allowzero"])
    x = ctx.value(0, exact=False)
    dims = ctx.shape_const(1, what="the target shape")
    src = (BATCH, *x.onnx_shape)
    if not ctx.attr("allowzero", 0):
        dims = [src[i] if d == 0 and i < len(src) else d for i, d in enumerate(dims)]
    # The batch axis: x.size(0) (folded to BATCH), 0 (copied from the input), -1 with every
    # other size given, or the batch size a file with a fixed batch declares.
    head = dims[0] if dims else None
    if head is BATCH or head in ctx.static_batch or head == -1 and BATCH not in dims[1:] and -1 not in dims[1:]:
        rest = list(dims[1:])
    else:
        raise ctx.fail(f"target shape {dims}: numbacnn keeps the batch axis first and free (write it as "
                       f"x.size(0) or 0, and -1 for the rest)")
    if rest.count(-1) == 1:
        known = math.prod(d for d in rest if d != -1)
        rest[rest.index(-1)] = math.prod(x.onnx_shape) // max(known, 1)
    if BATCH in rest or any(d < 1 for d in rest):
        raise ctx.fail(f"target shape {dims}: only the first axis may be the batch")
    reshape_to(ctx, x, tuple(int(d) for d in rest))


@imports("Squeeze", "Unsqueeze")
def squeeze_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    x = ctx.value(0, exact=False)
    full = [1, *x.onnx_shape]
    axes = ctx.const(1, what="axes")
    if ctx.op_type == "Squeeze":
        rank = len(full)
        drop = {int(a) % rank for a in np.ravel(axes)} if axes is not None else {i for i, d in enumerate(full) if d == 1}
        if 0 in drop:
            raise ctx.fail("it squeezes the batch axis")
        target = tuple(d for i, d in enumerate(full) if i not in drop)[1:]
    else:
        rank = len(full) + np.size(axes)
        add = sorted(int(a) % rank for a in np.ravel(axes))
        if 0 in add:
            raise ctx.fail("it adds an axis before the batch axis")
        out, src = [], iter(full)
        for i in range(rank):
            out.append(1 if i in add else next(src))
        target = tuple(out[1:])
    reshape_to(ctx, x, target)


@imports("Identity")
def identity_in(ctx: Any) -> None:
    ctx.alias(ctx.const(0) if ctx.is_const(0) else ctx.value(0, pads_ok=True, exact=False))


def _linear(ctx: Any, x: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
    if len(x.onnx_shape) != 1:
        raise ctx.fail(f"its data input is {len(x.onnx_shape) + 1}-D; numbacnn's linear takes (N, features)")
    # With free input sizes the width may follow them: nc.Model refuses that, naming the node
    if weight.shape[1] != x.onnx_shape[0] and not ctx.probing:
        raise ctx.fail(f"the weight expects {weight.shape[1]} input features, the input has {x.onnx_shape[0]}")
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    ctx.layer("linear", [x], params=params, out_features=int(weight.shape[0]), bias=bias is not None)


@imports("Gemm")
def gemm_in(ctx: Any) -> None:
    ctx.expect_attrs(["alpha", "beta", "transA", "transB"])
    if ctx.attr("transA", 0):
        raise ctx.fail("transA=1; numbacnn's linear takes the data as (N, features)")
    x = ctx.value(0, exact=False)
    b = ctx.const(1, what="B (the weight)")
    w = (b if ctx.attr("transB", 0) else b.T) * ctx.attr("alpha", 1.0)
    c = ctx.const(2, what="C (the bias)")
    if c is not None:
        try:
            c = np.broadcast_to(c.reshape(-1) if c.ndim == 2 and c.shape[0] == 1 else c, (w.shape[0],))
        except ValueError:
            raise ctx.fail(f"C has shape {c.shape}; numbacnn's linear adds one bias per output feature") from None
        c = c * ctx.attr("beta", 1.0)
    _linear(ctx, x, np.ascontiguousarray(w), c)


@imports("MatMul")
def matmul_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    b = ctx.const(1, what="B (the weight)")
    if b is None or b.ndim != 2:
        raise ctx.fail("MatMul is supported as data (N, features) times a constant 2-D weight")
    _linear(ctx, ctx.value(0, exact=False), np.ascontiguousarray(b.T), None)


@imports("Add", "Sum")
def add_in(ctx: Any) -> None:
    ctx.expect_attrs([])
    n = len(ctx.node.input)
    consts = [i for i in range(n) if ctx.is_const(i)]
    if not consts:
        xs = [ctx.value(i, exact=False) for i in range(n)]
        if n == 1:
            ctx.alias(xs[0])
        else:
            ctx.layer("add", xs, onnx_shape=xs[0].onnx_shape)
        return
    if n != 2 or len(consts) != 1:
        raise ctx.fail("an Add of constants to data is supported only as the bias of the MatMul or Conv before it")
    i = 1 - consts[0]
    x = ctx.value(i, exact=False)
    _add_bias(ctx, x, ctx.const(consts[0]), ctx.readers_of(i))


def _add_bias(ctx: Any, x: Any, c: np.ndarray, readers: int) -> None:
    """A constant added to a bias-free linear or convolution that nothing else reads: its bias."""
    rec = ctx.producer(x)
    ok = rec is not None and readers == 1 and rec.config.get("bias") is False and rec.layer in (
        "linear", "conv1d", "conv2d", "conv3d")
    K = x.shape[0] if ok else 0
    want = (K,) if rec is not None and rec.layer == "linear" else (K, *[1] * (len(x.shape) - 1))
    squeezed = c.reshape(c.shape[1:]) if c.ndim == len(want) + 1 and c.shape[0] == 1 else c
    if not ok or squeezed.shape not in (want, (K,) if len(want) == 1 else want):
        raise ctx.fail(f"an Add of a constant of shape {c.shape} to data is supported only as the bias of the "
                       f"MatMul (or bias-free Conv) before it, read by nothing else")
    rec.config["bias"] = True
    rec.params["bias"] = np.ascontiguousarray(squeezed.reshape(K))
    ctx.alias(x)


@imports("Concat")
def concat_in(ctx: Any) -> None:
    ctx.expect_attrs(["axis"])
    n = len(ctx.node.input)
    first = ctx.value(0, exact=False)
    axis = int(ctx.attr("axis")) % (len(first.onnx_shape) + 1)
    if axis != 1:
        raise ctx.fail(f"axis={ctx.attr('axis')}; numbacnn concatenates channels (axis 1)")
    xs = [ctx.value(i, exact=len(first.shape) != 1) for i in range(n)]
    if n == 1:
        ctx.alias(xs[0])
        return
    shape = (sum(x.onnx_shape[0] for x in xs), *first.onnx_shape[1:])
    ctx.layer("concat", xs, onnx_shape=shape, dim=1)


@imports("Resize")
def resize_in(ctx: Any) -> None:
    ctx.expect_attrs(["antialias", "axes", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside",
                      "extrapolation_value", "keep_aspect_ratio_policy", "mode", "nearest_mode"])
    x = ctx.value(0)
    mode, ctm = ctx.attr("mode", "nearest"), ctx.attr("coordinate_transformation_mode", "half_pixel")
    if len(x.onnx_shape) != 3:
        raise ctx.fail("numbacnn's upsample resizes (N, C, H, W) data")
    if mode == "nearest" and ctm == "asymmetric" and ctx.attr("nearest_mode", "round_prefer_floor") == "floor":
        config: dict[str, Any] = {"mode": "nearest"}
    elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        config = {"mode": "bilinear", "align_corners": ctm == "align_corners"}
    else:
        raise ctx.fail(f"mode={mode!r} with coordinate_transformation_mode={ctm!r}; numbacnn's upsample is "
                       f"PyTorch's: nearest (asymmetric, floor) or bilinear (half_pixel, pytorch_half_pixel or "
                       f"align_corners)")
    axes = [int(a) % 4 for a in ctx.attr("axes", [0, 1, 2, 3])]
    scales = ctx.const(2, what="scales") if ctx.has(2) else None
    if scales is not None and np.size(scales):
        full = dict(zip(axes, np.ravel(scales).tolist()))
        if full.get(0, 1.0) != 1.0 or full.get(1, 1.0) != 1.0:
            raise ctx.fail(f"scales {list(np.ravel(scales))} resize the batch or channel axis")
        sh, sw = full.get(2, 1.0), full.get(3, 1.0)
        config["scale_factor"] = sh if sh == sw else (sh, sw)
    else:
        sizes = dict(zip(axes, ctx.shape_const(3, what="sizes")))
        config["size"] = (int(sizes[2]), int(sizes[3]))
    ctx.layer("upsample", [x], **config)
