"""Data augmentation for ``Trainer.fit(augment=...)``: callables ``aug(x, rng) -> x``.

``x`` is a float32 (N, C, H, W) batch and ``rng`` a ``numpy.random.Generator`` (the trainer's,
seeded per epoch, so augmented runs are reproducible). The input is never modified.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["RandomShift", "RandomCropFlip", "Compose", "parse"]


def _check_batch(x: np.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(f"augmentation expects an (N, C, H, W) batch, found shape {x.shape}")


def _shifted(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each image moved by (dy[i], dx[i]) pixels, zeros shifted in."""
    H, W = x.shape[2:]
    out = np.zeros_like(x)
    for i in range(len(x)):
        a, b = int(dy[i]), int(dx[i])
        out[i, :, max(a, 0):H + min(a, 0), max(b, 0):W + min(b, 0)] = \
            x[i, :, max(-a, 0):H + min(-a, 0), max(-b, 0):W + min(-b, 0)]
    return out


class RandomShift:
    """Move each image by up to ``max_shift`` pixels in each direction (network3's expansion)."""

    def __init__(self, max_shift: int = 1) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"RandomShift: max_shift must be an int >= 0, found {max_shift!r}")
        self.max_shift = max_shift

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(x)
        k = self.max_shift
        dy, dx = rng.integers(-k, k + 1, size=(2, len(x)))
        return _shifted(x, dy, dx)

    def __repr__(self) -> str:
        return f"RandomShift({self.max_shift})"


class RandomCropFlip:
    """Zero-pad by ``padding``, crop a random window of the original size, flip half left-right."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"RandomCropFlip: padding must be an int >= 0, found {padding!r}")
        self.padding = padding
        self.flip = bool(flip)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(x)
        p = self.padding
        # A crop at offset o of the padded image is the image shifted by p - o.
        dy, dx = p - rng.integers(0, 2 * p + 1, size=(2, len(x)))
        out = _shifted(x, dy, dx)
        if self.flip:
            mirror = rng.random(len(x)) < 0.5
            out[mirror] = out[mirror, :, :, ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"


class Compose:
    """Apply augmentations in order."""

    def __init__(self, *augs: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> None:
        self.augs = augs

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for aug in self.augs:
            x = aug(x, rng)
        return x


def parse(text: str) -> Any:
    """``"shift:2"`` -> ``RandomShift(2)``, ``"crop-flip:4"`` -> ``RandomCropFlip(4)`` (the CLI's spelling)."""
    kind, _, arg = text.partition(":")
    try:
        if kind == "shift":
            return RandomShift(int(arg or 1))
        if kind == "crop-flip":
            return RandomCropFlip(int(arg or 4))
    except ValueError as e:
        raise ValueError(f"augmentation {text!r}: {e}") from None
    raise ValueError(f"unknown augmentation {text!r}; expected shift[:K] or crop-flip[:PADDING]")
