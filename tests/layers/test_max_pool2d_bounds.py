"""max_pool2d's CPU kernels on seeded random geometries, every array fenced (run_fenced): a read
past an array brings NaN into the output, a write past it fails the run. Both kernels are
swept: the window kernel (with its unrolled 2x2 unpadded branch) and the row kernel (stride-1
width)."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import run_fenced

MaxPool2d = nc.get_layer("max_pool2d")


def _out(size, k, s, p, d, ceil_mode):
    # PyTorch's rule, worked out here: in ceil mode a window must start inside the input or
    # the leading padding.
    span = size + 2 * p - d * (k - 1) - 1
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def max_pool_ref(x, gy, R, S, sh, sw, ph, pw, dh, dw, ceil_mode):
    """Forward and input gradient by explicit loops over outputs and taps (float64)."""
    N, C, H, W = x.shape
    P, Q = _out(H, R, sh, ph, dh, ceil_mode), _out(W, S, sw, pw, dw, ceil_mode)
    y = np.full((N, C, P, Q), -np.inf)
    gx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for p in range(P):
                for q in range(Q):
                    at = None
                    for r in range(R):
                        for s in range(S):
                            h, w = p * sh - ph + r * dh, q * sw - pw + s * dw
                            if 0 <= h < H and 0 <= w < W and x[n, c, h, w] > y[n, c, p, q]:
                                y[n, c, p, q], at = x[n, c, h, w], (h, w)
                    if at is not None:
                        gx[n, c, at[0], at[1]] += gy[n, c, p, q]
    return y, gx


def _check(kw, shape, rng, dtype=np.float64):
    layer = MaxPool2d(**kw)
    x = rng.standard_normal(shape).astype(dtype)
    C, P, Q = layer.output_shape(shape[1:])
    gy = rng.standard_normal((shape[0], C, P, Q)).astype(dtype)
    run = run_fenced(layer, [x], gy)
    (R, S), (sh, sw) = layer.kernel, layer.stride
    want_y, want_gx = max_pool_ref(x.astype(np.float64), gy.astype(np.float64), R, S, sh, sw, *layer.padding,
                                   *layer.dilation, layer.ceil_mode)
    assert run.y.shape == want_y.shape
    np.testing.assert_array_equal(run.y, want_y.astype(dtype), err_msg=f"forward of {layer!r} on {shape}")
    np.testing.assert_allclose(run.gxs[0], want_gx, rtol=1e-6, atol=1e-6, err_msg=f"input gradient of {layer!r}")
    inference = run_fenced(layer, [x], None, training=False)
    np.testing.assert_array_equal(inference.y, run.y)


# Regression: ceil mode adds a last row/column of windows that hang past an odd input; the
# unrolled 2x2 branch read x[h + 1] / x[w + 1] there (the next row's values, or past the
# array: 1e29 or NaN) and routed gradients to the index past the plane.
@pytest.mark.parametrize("kw, shape", [
    (dict(kernel_size=2, ceil_mode=True), (1, 1, 5, 5)),
    (dict(kernel_size=2, ceil_mode=True), (2, 3, 5, 7)),
    (dict(kernel_size=2, ceil_mode=True), (1, 2, 6, 3)),
    (dict(kernel_size=2, stride=(2, 3), ceil_mode=True), (1, 1, 3, 7)),
    (dict(kernel_size=2, ceil_mode=True), (1, 1, 1, 1)),
])
def test_max_pool2d_2x2_ceil_mode_windows_hanging_past_the_input(kw, shape):
    _check(kw, shape, np.random.default_rng(1))


# The flat 2x2 stride-2 forward (_max_pool2d_cpu._forward_2x2) indexes x by plane and row
# itself: odd sizes in floor mode leave a last row or column unread, and its planes must not
# run into one another. Even sizes take _rows2x2 in inference (blocks of rows across planes:
# one block, several with a short last one, a row wider than a block).
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 6, 3), (3, 1, 2, 2), (1, 4, 9, 4), (2, 3, 6, 10), (4, 8, 30, 30),
                                   (1, 1, 2, 2100)])
def test_max_pool2d_flat_2x2_kernel_fenced(shape):
    _check(dict(kernel_size=2), shape, np.random.default_rng(shape[3]), np.float32)


# Inference's 3x3 stride-2 padding-1 pool over even planes (_max_pool2d_cpu._rows3x3s2) reads
# the row above each block of output rows, which may start inside a plane (one-row blocks on
# wide rows, 34-row blocks on 15-row planes), and column 0's clamped tap.
@pytest.mark.parametrize("shape", [(2, 3, 6, 10), (3, 5, 8, 8), (1, 2, 6, 2100), (4, 8, 30, 30), (1, 1, 2, 2)])
def test_max_pool2d_3x3_stride_2_rows_fenced(shape):
    _check(dict(kernel_size=3, stride=2, padding=1), shape, np.random.default_rng(shape[3]), np.float32)


def _geometries(count, seed):
    """Random legal geometries: one in three the unrolled 2x2 unpadded window."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        two = rng.random() < 1 / 3
        R, S = (2, 2) if two else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        kw = dict(kernel_size=(R, S), stride=stride, ceil_mode=bool(rng.random() < 0.5))
        if not two:
            kw["padding"] = (int(rng.integers(0, R // 2 + 1)), int(rng.integers(0, S // 2 + 1)))
            kw["dilation"] = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        try:
            MaxPool2d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue  # smaller than the window
        out.append((kw, shape))
    return out


def _geometries3(count, seed):
    """Random 3x3 undilated windows (_max_pool2d_cpu._forward_3x3: separable, edges clamped)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        kw = dict(kernel_size=3, stride=(1, 1) if rng.random() < 0.4 else (int(rng.integers(1, 4)), int(rng.integers(2, 4))),
                  padding=(int(rng.integers(0, 2)), int(rng.integers(0, 2))), ceil_mode=bool(rng.random() < 0.5))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        try:
            MaxPool2d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(48, seed=2024) + _geometries3(24, seed=33)


def test_max_pool2d_random_geometries_cover_both_kernels_and_the_edges():
    unrolled = [(kw, s) for kw, s in GEOMETRIES if kw["kernel_size"] == (2, 2) and "padding" not in kw]
    assert len([1 for kw, _ in GEOMETRIES if kw["stride"][1] == 1]) >= 8  # the row kernel
    assert len(unrolled) >= 8
    assert any(kw["ceil_mode"] and (s[2] % 2 or s[3] % 2) for kw, s in unrolled)
    assert any(min(s[2:]) == 1 for _, s in GEOMETRIES) and any(s[0] == 1 for _, s in GEOMETRIES)
    three = [kw["stride"] for kw, _ in GEOMETRIES if kw["kernel_size"] == 3]
    assert three.count((1, 1)) >= 5 and sum(sw > 1 for _, sw in three) >= 10  # strides 1 and 2-3


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_max_pool2d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    _check(kw, shape, np.random.default_rng(i), np.float32 if i % 4 == 3 else np.float64)
