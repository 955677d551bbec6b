"""Window geometry of the convolution and pooling layers: their hyper-parameters and output
sizes, one implementation each.

PyTorch's conventions: sizes are an int or an (h, w) pair (a 1-tuple or a (d, h, w) triple
for the 1-D and 3-D layers); a convolution's padding is also
"valid", "same" (stride 1 only; the odd pixel of an even total goes to the bottom/right) or an
explicit (begin, end) per axis ((top, bottom, left, right) in 2-D); a pooling's is symmetric, at
most half its window.
out = floor((in + pads - dilation * (kernel - 1) - 1) / stride) + 1, or with ``ceil_mode``
rounded up, as long as the last window starts inside the input or its leading padding.
Adaptive poolings take an output size instead (None keeps the input's size along that axis).
"""

from __future__ import annotations

from typing import Any

from ..layer import Shape, ShapeError

__all__ = ["pair", "ntuple", "padding4", "padding_pairs", "out_size", "flag", "pool_padding", "pool_output_shape",
           "adaptive_size", "adaptive_output_shape", "conv_channels", "grouped_input"]

Pads = tuple[int, int, int, int]
Pair = tuple[int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_TUPLES = {1: "a 1-tuple", 2: "a pair", 3: "a triple"}
#: What an input of each spatial rank looks like, per sample.
SHAPES = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def ntuple(value: Any, name: str, n: int, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as ``n`` ints >= ``minimum`` (an int stands for all of them);
    TypeError/ValueError otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or {_TUPLES[n]} of ints, found {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, found {value!r}")
    return items


def pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as an (h, w) pair of ints >= ``minimum``; TypeError/ValueError otherwise."""
    return ntuple(value, name, 2, minimum)  # type: ignore[return-value]


def padding4(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> Pads:
    """Padding as (top, bottom, left, right) from an int, a pair, a 4-tuple, "valid" or "same"."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return _same(kernel, stride, dilation)  # type: ignore[return-value]
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'same', 'valid', an int, a pair or (top, bottom, left, right), "
                         f"found {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if not all(_is_int(v) for v in padding):
            raise TypeError(f"padding (top, bottom, left, right) must be ints, found {padding!r}")
        if any(v < 0 for v in padding):
            raise ValueError(f"padding must be >= 0, found {padding!r}")
        return tuple(padding)  # type: ignore[return-value]
    ph, pw = pair(padding, "padding", minimum=0)
    return ph, ph, pw, pw


def _same(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    # PyTorch's padding="same": the odd pixel of an even total goes to the end of the axis.
    if any(s != 1 for s in stride):
        raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), found stride={stride}")
    totals = (d * (k - 1) for d, k in zip(dilation, kernel))
    return tuple(v for t in totals for v in (t // 2, t - t // 2))


def padding_pairs(padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> tuple[int, ...]:
    """An n-axis convolution's padding as (begin, end) per axis, flattened ((front, back, top,
    bottom, left, right) in 3-D), from an int, n ints, those 2n, "valid" or "same"."""
    n = len(kernel)
    if padding == "valid":
        return (0,) * (2 * n)
    if padding == "same":
        return _same(kernel, stride, dilation)
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'same', 'valid', an int, {_TUPLES[n]} or {2 * n} ints (begin, end per "
                         f"axis), found {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 2 * n:
        if not all(_is_int(v) for v in padding):
            raise TypeError(f"padding (begin, end per axis) must be ints, found {padding!r}")
        if any(v < 0 for v in padding):
            raise ValueError(f"padding must be >= 0, found {padding!r}")
        return tuple(padding)
    return tuple(v for p in ntuple(padding, "padding", n, minimum=0) for v in (p, p))


def out_size(size: int, kernel: int, stride: int = 1, pads: tuple[int, int] = (0, 0), dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """Output length along one axis, padded by ``pads`` = (before, after); 0 when nothing fits."""
    span = size + pads[0] + pads[1] - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pads[0]:
        out -= 1  # PyTorch: the last window must start inside the input or the leading padding
    return max(out, 0)


def flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (``ceil_mode`` and the like); TypeError otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, found {value!r}")
    return value


def conv_channels(out_channels: Any, groups: Any, bias: Any) -> tuple[int, int, bool]:
    """A convolution's (out_channels, groups, bias), checked: positive ints, out_channels a
    multiple of groups, bias a bool; TypeError or ValueError naming the argument otherwise."""
    for what, v in (("out_channels", out_channels), ("groups", groups)):
        if not _is_int(v):
            raise TypeError(f"{what} must be an int, found {v!r}")
        if v < 1:
            raise ValueError(f"{what} must be >= 1, found {v}")
    if out_channels % groups:
        raise ValueError(f"out_channels={out_channels} is not divisible by groups={groups}")
    return out_channels, groups, flag(bias, "bias")


def grouped_input(x_shape: Shape, groups: int, dims: int = 2) -> Shape:
    """A convolution's per-sample input shape, checked: ``dims`` spatial axes and a channel
    count that ``groups`` divides; ShapeError saying what was expected otherwise."""
    if len(x_shape) != dims + 1:
        raise ShapeError(f"expected a {SHAPES[dims]} input, found shape {tuple(x_shape)}")
    C = x_shape[0]
    if C % groups:
        raise ShapeError(f"input has {C} channels, which groups={groups} does not divide "
                         f"(expected a multiple of {groups}, found {C})")
    return tuple(x_shape)


def _x(sizes: tuple[int, ...]) -> str:
    return "x".join(map(str, sizes))


def pool_padding(padding: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
    """``padding`` if every window still holds input (PyTorch's limit: at most half the kernel)."""
    half = tuple(k // 2 for k in kernel)
    if any(p > h for p, h in zip(padding, half)):
        raise ValueError(f"padding must be at most half of kernel_size: expected padding <= {_x(half)}, "
                         f"found {_x(padding)} for kernel_size {_x(kernel)}")
    return padding


def pool_output_shape(x_shape: Shape, window: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
                      ceil_mode: bool) -> Shape:
    """(C, *sizes) -> (C, *pooled sizes) for an effective (dilated) ``window`` of one size per
    spatial axis (1 to 3 of them), or a ShapeError.

    As in PyTorch, ceil mode accepts an input smaller than the window when the rounding up
    still gives one window that starts inside it.
    """
    n = len(window)
    if len(x_shape) != n + 1:
        raise ShapeError(f"expected an input of shape {SHAPES[n]}, found {tuple(x_shape)}")
    sizes = tuple(x_shape[1:])

    def size(m: int, i: int) -> int:
        return out_size(m, window[i], stride[i], (padding[i], padding[i]), 1, ceil_mode)

    out = tuple(size(m, i) for i, m in enumerate(sizes))
    if min(out) < 1:
        need = tuple(next(m for m in range(1, window[i] + 1) if size(m, i) >= 1) for i in range(n))
        padded = f" (padded to {_x(tuple(m + 2 * p for m, p in zip(sizes, padding)))})" if any(padding) else ""
        what = f"input of length {sizes[0]}{padded} is shorter than the window of {window[0]}" if n == 1 else \
            f"input {_x(sizes)}{padded} is smaller than the {_x(window)} window"
        raise ShapeError(f"{what}: expected at least {_x(need)}, found {_x(sizes)}")
    return (x_shape[0], *out)


def adaptive_size(output_size: Any, n: int = 2) -> tuple[int | None, ...]:
    """An adaptive pooling's ``output_size``: an int, or ``n`` ints >= 1 or None (None keeps the
    input's size along that axis, as in PyTorch)."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * n
    if output_size is None or len(items) != n or not all(v is None or _is_int(v) for v in items):
        raise TypeError(f"output_size must be an int or {_TUPLES[n]} of ints or None, found {output_size!r}")
    if any(v is not None and v < 1 for v in items):
        raise ValueError(f"output_size must be >= 1 (or None: the input's size), found {output_size!r}")
    return items


def adaptive_output_shape(x_shape: Shape, output_size: tuple[int | None, ...]) -> Shape:
    """(C, *sizes) -> (C, *output_size), None taking the input's size, or a ShapeError.

    Output i of an axis of ``size`` pools the input's bin floor(i * size / out) .. ceil((i + 1)
    * size / out) (exclusive), as PyTorch splits it: bins may overlap, and an input smaller
    than the output repeats elements."""
    n = len(output_size)
    if len(x_shape) != n + 1:
        raise ShapeError(f"expected an input of shape {SHAPES[n]}, found {tuple(x_shape)}")
    return (x_shape[0], *(m if o is None else o for m, o in zip(x_shape[1:], output_size)))
