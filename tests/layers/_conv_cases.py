"""What conv2d's tests share: a stride-1 convolution by loops over output pixels, in float64
(the reference the Winograd path's tests hold it to), and the CPU path a plan picks."""

import numpy as np


def naive(x, w, b, gy, pad):
    """y, gx, gw, gb of a stride-1 convolution with symmetric zero padding ``pad``, by loops
    over output pixels (float64), independent of any transform."""
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    P, Q = H + 2 * pad - R + 1, W + 2 * pad - S + 1
    y = np.zeros((N, K, P, Q))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for p in range(P):
        for q in range(Q):
            win = xp[:, :, p:p + R, q:q + S]
            y[:, :, p, q] = np.einsum("ncrs,kcrs->nk", win, w) + b
            if gy is not None:
                gxp[:, :, p:p + R, q:q + S] += np.einsum("nk,kcrs->ncrs", gy[:, :, p, q], w)
                gw += np.einsum("nk,ncrs->kcrs", gy[:, :, p, q], win)
    gb = None if gy is None else gy.sum(axis=(0, 2, 3))
    return y, gxp[:, :, pad:pad + H, pad:pad + W], gw, gb


def cpu_plan(layer, shape, dtype="float32", backward=True):
    """The CPU plan conv2d_plan makes for an (N, C, H, W) input (conv1d: N, C, 1, L), for a
    training step (``backward``) or inference."""
    from numbacnn.layers import conv2d_cpu

    out = (shape[0], *layer._output_shape_2d(tuple(shape[1:])))
    return conv2d_cpu.conv2d_plan("c", tuple(shape), out, layer._geometry(), backward, dtype)


def cpu_path(layer, shape, dtype="float32", backward=True):
    """The path of ``cpu_plan``'s plan."""
    return cpu_plan(layer, shape, dtype, backward).path
