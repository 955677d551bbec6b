"""Hyper-parameter parsing and output sizes shared by the convolution and pooling layers.

PyTorch's conventions: sizes are an int or an (h, w) pair; padding is also "valid", "same"
(stride 1 only; the odd pixel of an even total goes to the bottom/right) or an explicit
(top, bottom, left, right); out = floor((in + pads - dilation * (kernel - 1) - 1) / stride) + 1.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pair", "padding4", "out_size"]

Pads = tuple[int, int, int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as an (h, w) pair of ints >= ``minimum``; TypeError/ValueError otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, found {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, found {value!r}")
    return items[0], items[1]


def padding4(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> Pads:
    """Padding as (top, bottom, left, right) from an int, a pair, a 4-tuple, "valid" or "same"."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), found stride={stride}")
        th, tw = (d * (k - 1) for d, k in zip(dilation, kernel))
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
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


def out_size(size: int, kernel: int, stride: int = 1, pads: tuple[int, int] = (0, 0), dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """Output length along one axis, padded by ``pads`` = (before, after); 0 when nothing fits."""
    span = size + pads[0] + pads[1] - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pads[0]:
        out -= 1  # PyTorch: the last window must start inside the input or the leading padding
    return max(out, 0)
