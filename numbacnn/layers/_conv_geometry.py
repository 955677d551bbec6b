"""Window geometry of the convolution and pooling layers: their hyper-parameters and output
sizes, one implementation each.

PyTorch's conventions: sizes are an int or an (h, w) pair; a convolution's padding is also
"valid", "same" (stride 1 only; the odd pixel of an even total goes to the bottom/right) or an
explicit (top, bottom, left, right); a pooling's is symmetric, at most half its window.
out = floor((in + pads - dilation * (kernel - 1) - 1) / stride) + 1, or with ``ceil_mode``
rounded up, as long as the last window starts inside the input or its leading padding.
"""

from __future__ import annotations

from typing import Any

from ..layer import Shape, ShapeError

__all__ = ["pair", "padding4", "out_size", "flag", "pool_padding", "pool_output_shape"]

Pads = tuple[int, int, int, int]
Pair = tuple[int, int]


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


def flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (``ceil_mode`` and the like); TypeError otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, found {value!r}")
    return value


def pool_padding(padding: Pair, kernel: Pair) -> Pair:
    """``padding`` if every window still holds input (PyTorch's limit: at most half the kernel)."""
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size: expected padding <= "
                         f"{kernel[0] // 2}x{kernel[1] // 2}, found {padding[0]}x{padding[1]} "
                         f"for kernel_size {kernel[0]}x{kernel[1]}")
    return padding


def pool_output_shape(x_shape: Shape, window: Pair, stride: Pair, padding: Pair, ceil_mode: bool) -> Shape:
    """(C, H, W) -> (C, P, Q) for an effective (dilated) ``window``, or a ShapeError.

    As in PyTorch, ceil mode accepts an input smaller than the window when the rounding up
    still gives one window that starts inside it.
    """
    if len(x_shape) != 3:
        raise ShapeError(f"expected an input of shape (C, H, W), found {tuple(x_shape)}")
    C, H, W = x_shape

    def size(n: int, i: int) -> int:
        return out_size(n, window[i], stride[i], (padding[i], padding[i]), 1, ceil_mode)

    P, Q = size(H, 0), size(W, 1)
    if P < 1 or Q < 1:
        need = [next(n for n in range(1, window[i] + 1) if size(n, i) >= 1) for i in (0, 1)]
        padded = f" (padded to {H + 2 * padding[0]}x{W + 2 * padding[1]})" if any(padding) else ""
        raise ShapeError(f"input {H}x{W}{padded} is smaller than the {window[0]}x{window[1]} window: "
                         f"expected at least {need[0]}x{need[1]}, found {H}x{W}")
    return (C, P, Q)
