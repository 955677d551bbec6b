"""conv_transpose2d CUDA kernels: one output element per thread, gathers only, launchers under
their kernels.

The forward gathers, for its output pixel, the input pixels and taps that reach it (a tap
reaches it when the pixel's offset from the tap is a whole number of strides inside the
input); the input gradient is a plain convolution of gy; the weight gradient gives each
weight element a thread that sums over the batch and the input pixels, and the bias
gradient one thread per channel. No atomics: each element has one writer, and every sum
runs in a fixed order. Where the CPU's column matrices hold a zero for a tap outside gy, the
gradients here multiply by that zero too, so NaN and Inf spread alike on both devices.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

from .._jit import cuda_kernel
from ..device import is_simulator

__all__ = ["conv_transpose2d_scratch", "conv_transpose2d_forward", "conv_transpose2d_backward"]

# Threads per block; the simulator runs each as a Python thread, so it gets fewer.
THREADS = 32 if is_simulator() else 256

Geometry = tuple[int, int, int, int, int, int, int, int, int]


def _blocks(n: int) -> int:
    return max(1, (n + THREADS - 1) // THREADS)


def conv_transpose2d_scratch(x_shape: tuple[int, ...], y_shape: tuple[int, ...], geo: Geometry,
                             dtype: Any = None) -> dict[str, tuple]:
    """No scratch: the kernels gather straight from x, gy and w (for any ``dtype``)."""
    return {"col": (0,), "phase": (0,), "part": (0,)}


@cuda_kernel
def _forward_kernel(x, w, b, y, sh, sw, dh, dw, ph, pw):
    i = cuda.grid(1)
    N, K, P, Q = y.shape
    C, Kg, R, S = w.shape
    H, W = x.shape[2], x.shape[3]
    if i >= N * K * P * Q:
        return
    n, k, p, q = i // (K * P * Q), i // (P * Q) % K, i // Q % P, i % Q
    g, kg = k // Kg, k % Kg
    Cg = C // (K // Kg)
    acc = y.dtype.type(0)
    for r in range(R):
        th = p + ph - r * dh
        if th >= 0 and th % sh == 0 and th // sh < H:
            for s in range(S):
                tw = q + pw - s * dw
                if tw >= 0 and tw % sw == 0 and tw // sw < W:
                    for c in range(g * Cg, (g + 1) * Cg):
                        acc += x[n, c, th // sh, tw // sw] * w[c, kg, r, s]
    y[n, k, p, q] = acc + b[k] if b.size else acc


def conv_transpose2d_forward(x: Any, w: Any, b: Any, y: Any, col: Any, phase: Any, geo: Geometry,
                             wide: Any = None) -> None:
    """y = conv_transpose2d(x, w) + b (b empty: no bias); ``col``, ``phase`` and ``wide`` (the
    CPU's wide 3x3 convolution: never planned here, always None) are unused here."""
    _forward_kernel[_blocks(y.size), THREADS](x, w, b, y, *geo[3:])


@cuda_kernel
def _backward_input_kernel(w, gy, gx, sh, sw, dh, dw, ph, pw):
    i = cuda.grid(1)
    N, C, H, W = gx.shape
    K, P, Q = gy.shape[1], gy.shape[2], gy.shape[3]
    Kg, R, S = w.shape[1], w.shape[2], w.shape[3]
    if i >= N * C * H * W:
        return
    n, c, h, v = i // (C * H * W), i // (H * W) % C, i // W % H, i % W
    k0 = c // (C // (K // Kg)) * Kg
    zero = gy.dtype.type(0)
    acc = zero
    for kg in range(Kg):
        for r in range(R):
            p = h * sh + r * dh - ph
            for s in range(S):
                q = v * sw + s * dw - pw
                t = gy[n, k0 + kg, p, q] if p >= 0 and p < P and q >= 0 and q < Q else zero
                acc += t * w[c, kg, r, s]
    gx[n, c, h, v] = acc


@cuda_kernel
def _backward_weight_kernel(x, gy, gw, sh, sw, dh, dw, ph, pw):
    i = cuda.grid(1)
    C, Kg, R, S = gw.shape
    N, _, H, W = x.shape
    K, P, Q = gy.shape[1], gy.shape[2], gy.shape[3]
    if i >= C * Kg * R * S:
        return
    c, kg, r, s = i // (Kg * R * S), i // (R * S) % Kg, i // S % R, i % S
    k = c // (C // (K // Kg)) * Kg + kg
    zero = x.dtype.type(0)
    acc = zero
    for n in range(N):
        for h in range(H):
            p = h * sh + r * dh - ph
            for v in range(W):
                q = v * sw + s * dw - pw
                t = gy[n, k, p, q] if p >= 0 and p < P and q >= 0 and q < Q else zero
                acc += x[n, c, h, v] * t
    gw[c, kg, r, s] += acc


@cuda_kernel
def _backward_bias_kernel(gy, gb):
    k = cuda.grid(1)
    N, K, M = gy.shape
    if k >= K:
        return
    acc = gy.dtype.type(0)
    for n in range(N):
        for i in range(M):
            acc += gy[n, k, i]
    gb[k] += acc


def conv_transpose2d_backward(x: Any, w: Any, gy: Any, gw: Any, gb: Any, gx: Any, col: Any, phase: Any,
                              part: Any, geo: Geometry) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted); ``col``, ``phase`` and ``part`` are unused here."""
    _backward_weight_kernel[_blocks(gw.size), THREADS](x, gy, gw, *geo[3:])
    if gb.size:
        N, K = gy.shape[:2]
        _backward_bias_kernel[_blocks(K), THREADS](gy.reshape(N, K, gy.size // (N * K)), gb)
    if gx is not None:
        _backward_input_kernel[_blocks(gx.size), THREADS](w, gy, gx, *geo[3:])
