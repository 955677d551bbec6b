"""What the CPU backend needs of kernels itself; the twin of ``_device_cuda.py``.

``fill(a, value)``: every element of ``a`` (any shape) set to ``value``, cast to ``a``'s dtype.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fill"]


def fill(a: Any, value: float) -> None:
    # NumPy's own fill: one pass, any layout, nothing to compile.
    a.fill(value)
