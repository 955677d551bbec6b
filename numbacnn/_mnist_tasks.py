"""Tasks made from MNIST images for the zoo's non-image-classifier shapes, so every zoo model
trains on real data that is available offline (the MNIST test set):

- ``pad32``: the digits zero-padded to 32x32 (LeNet-5's own input size), for 32x32 nets;
- ``rows``: each image as a sequence of its 28 rows, 28 features a step, ``(28, 28)`` as
  conv1d's ``(C, L)`` (C = the pixel columns, L = the rows), for 1-D CNNs;
- ``video``: each digit, halved to 14x14, moving one pixel a frame in a direction drawn per
  sample across 8 frames of 22x22, ``(1, 8, 22, 22)``, for 3-D CNNs;
- ``denoise``: (noisy image, clean image) pairs, Gaussian noise of standard deviation 0.5
  clipped to [0, 1], for encoder-decoders trained on mean squared error.

The labels of the first three are the digits; every random draw comes from a generator seeded
by ``seed``, so a dataset is the same on every call.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TASKS", "make_task", "VIDEO_FRAMES", "VIDEO_SIZE", "NOISE_STD"]

VIDEO_FRAMES, VIDEO_SIZE, NOISE_STD = 8, 22, 0.5


def _pad32(x: np.ndarray) -> np.ndarray:
    pad = [(0, 0), (0, 0), ((32 - x.shape[2]) // 2,) * 2, ((32 - x.shape[3]) // 2,) * 2]
    return np.ascontiguousarray(np.pad(x, pad))


def _rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, 0].transpose(0, 2, 1))


def _video(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, (h, w) = len(x), x.shape[2:]
    small = x[:, 0, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    s = small.shape[1]
    room = VIDEO_SIZE - s  # offsets 0..room keep the digit whole in every frame
    travel = VIDEO_FRAMES - 1
    v = rng.integers(-1, 2, size=(n, 2))
    # A moving axis starts where travel frames of motion stay in the frame; a still one anywhere.
    lo = np.where(v < 0, travel, 0)
    hi = np.where(v > 0, room - travel, room)
    start = lo + (rng.random((n, 2)) * (hi - lo + 1)).astype(np.int64)
    out = np.zeros((n, 1, VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE), np.float32)
    for t in range(VIDEO_FRAMES):
        pos = start + t * v
        for i in range(n):
            r, c = pos[i]
            out[i, 0, t, r:r + s, c:c + s] = small[i]
    return out


def _denoise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(NOISE_STD)
    return np.clip(x + noise, np.float32(0.0), np.float32(1.0))


TASKS = {
    "pad32": "digits zero-padded to 1x32x32",
    "rows": "each image as a 28-step sequence of 28-pixel rows, (28, 28) = conv1d's (C, L)",
    "video": f"a 14x14 digit moving a pixel a frame over {VIDEO_FRAMES} frames of {VIDEO_SIZE}x{VIDEO_SIZE}, "
             f"(1, {VIDEO_FRAMES}, {VIDEO_SIZE}, {VIDEO_SIZE})",
    "denoise": f"noisy images (Gaussian, std {NOISE_STD}, clipped to [0, 1]) -> the clean images",
}


def make_task(task: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` of ``task`` (``TASKS``) from MNIST images ``x`` (N, 1, 28, 28) and labels ``y``."""
    if task not in TASKS:
        raise ValueError(f"unknown MNIST task {task!r}; expected one of {', '.join(TASKS)}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"MNIST task {task}: expected images (N, 1, H, W), found {x.shape}")
    rng = np.random.default_rng(seed)
    if task == "pad32":
        return _pad32(x), y
    if task == "rows":
        return _rows(x), y
    if task == "video":
        return _video(x, rng), y
    return _denoise(x, rng), x
