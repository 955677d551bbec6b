"""avg_pool2d's CPU kernels on seeded random geometries, every array fenced (run_fenced): a read
past an array brings NaN into the output, a write past it fails the run. Forward and input
gradient against loops over outputs and window positions (float64)."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import run_fenced

AvgPool2d = nc.get_layer("avg_pool2d")


def _out(size, k, s, p, ceil_mode):
    span = size + 2 * p - k
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def avg_pool_ref(x, gy, R, S, sh, sw, ph, pw, ceil_mode, include_pad, override):
    """y and gx: a window position adds to the sum inside the input, and to the divisor inside
    the padded input (include_pad) or the input; a ceil-mode window past the padding counts
    only up to it, as in PyTorch."""
    N, C, H, W = x.shape
    P, Q = _out(H, R, sh, ph, ceil_mode), _out(W, S, sw, pw, ceil_mode)
    y, gx = np.zeros((N, C, P, Q)), np.zeros_like(x)
    for p in range(P):
        for q in range(Q):
            inside, count = [], 0
            for r in range(R):
                for s in range(S):
                    h, w = p * sh - ph + r, q * sw - pw + s
                    if 0 <= h < H and 0 <= w < W:
                        inside.append((h, w))
                    if -ph <= h < H + ph and -pw <= w < W + pw if include_pad else 0 <= h < H and 0 <= w < W:
                        count += 1
            div = override or count
            for h, w in inside:
                y[:, :, p, q] += x[:, :, h, w] / div
                gx[:, :, h, w] += gy[:, :, p, q] / div
    return y, gx


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        kw = dict(kernel_size=(R, S), stride=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                  padding=(int(rng.integers(0, R // 2 + 1)), int(rng.integers(0, S // 2 + 1))),
                  ceil_mode=bool(rng.random() < 0.5), count_include_pad=bool(rng.random() < 0.5),
                  divisor_override=int(rng.integers(1, 7)) if rng.random() < 0.15 else None)
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        try:
            AvgPool2d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(30, seed=7)


def test_avg_pool2d_random_geometries_cover_the_edges():
    assert sum(kw["ceil_mode"] and kw["count_include_pad"] and any(kw["padding"]) for kw, _ in GEOMETRIES) >= 3
    assert any(kw["divisor_override"] for kw, _ in GEOMETRIES)
    assert any(min(s[2:]) == 1 for _, s in GEOMETRIES) and any(s[0] == 1 for _, s in GEOMETRIES)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_avg_pool2d_random_geometries_fenced(i):
    kw, shape = GEOMETRIES[i]
    rng = np.random.default_rng(i)
    layer = AvgPool2d(**kw)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    y, gx = avg_pool_ref(x, gy, *layer.kernel, *layer.stride, *layer.padding, layer.ceil_mode,
                         layer.count_include_pad, layer.divisor_override)
    np.testing.assert_allclose(run.y, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(run_fenced(layer, [x], None, training=False).y, run.y)
