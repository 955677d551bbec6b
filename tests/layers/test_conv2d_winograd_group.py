"""conv2d's Winograd paths (3x3 and its sub-kernels, 5x5) with several samples per block (conv2d_winograd_cpu.scratch).

A small image has fewer 4x4 tiles than a block holds, so a block takes consecutive samples of
a chunk, their tiles one after the other in V and M, and each of the 36 products runs over
them all. These tests force the Winograd path (float64 too) and set the block size so that
blocks hold one sample in several pieces, two or three samples, or a whole chunk, over
batches that no group size divides and chunks that do not start on a group boundary: the
forward against naive loops, the gradients against float64 finite differences (check_layer,
which also compares one thread with all), every array fenced on random geometries, and the
NaN/Inf counts the fallback to im2col relies on.
"""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv2d_winograd_cpu
from numbacnn.layers.conv2d_winograd_cpu import conv2d_backward_wino, conv2d_forward_wino, scratch
from numbacnn.testing import check_layer, run_fenced
from _conv_cases import naive

Conv2d = nc.get_layer("conv2d")


def _block_for(samples, C, K, P, Q, kernel=(3, 3)):
    # _BLOCK_ELEMENTS for which a block holds ``samples`` whole samples (0: one tile row).
    th, tw = (P + 3) // 4, (Q + 3) // 4
    if tuple(kernel) == (5, 5):  # F(4x4, 5x5): 64 points, no sub-kernels
        return max(1, samples * th * 64 * tw * (C + K))
    J = ((kernel[0] + 2) // 3) * ((kernel[1] + 2) // 3) * C
    return max(1, samples * th * 36 * tw * (J + K))


# (N, C, K, H, W, kernel, pad): outputs 1x1, 4x4, 5x7, 9x6 (three tile rows), a 4x4 kernel
# (four sub-kernels side by side in V), 5x5 kernels (F(4x4, 5x5), conv2d_winograd5_cpu);
# channels off the 16-lane width.
GEOMETRIES = [(7, 5, 6, 3, 3, 3, 0), (7, 3, 17, 4, 4, 3, 1), (5, 6, 4, 5, 7, 3, 1), (7, 4, 5, 9, 6, 3, 1),
              (6, 5, 3, 6, 6, 4, 1), (7, 3, 4, 5, 7, 5, 2), (5, 4, 3, 1, 1, 5, 2), (7, 3, 17, 9, 6, 5, 2)]


def _out(geo):
    N, C, K, H, W, k, pad = geo
    return H + 2 * pad - k + 1, W + 2 * pad - k + 1


@pytest.mark.parametrize("samples", [0, 2, 3, 64])
@pytest.mark.parametrize("geo", GEOMETRIES, ids=[f"N{g[0]}-{g[1]}x{g[3]}x{g[4]}-K{g[2]}-k{g[5]}" for g in GEOMETRIES])
def test_grouped_blocks_match_naive_loops_and_finite_differences(geo, samples, monkeypatch):
    N, C, K, H, W, k, pad = geo
    P, Q = _out(geo)
    block = _block_for(samples, C, K, P, Q, (k, k))
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", block)
    th = (P + 3) // 4
    for T in (1, 2):  # the chunk counts check_layer runs (one thread, all of this machine's)
        tr = scratch(N, T, C, K, P, Q, (k, k))[1]
        per_chunk = -(-N // T)
        if samples == 0:
            assert tr == 1  # one sample, a block per tile row
        elif samples >= per_chunk:
            assert tr == per_chunk * th  # the whole chunk in one block
        else:
            assert tr % th == 0 and 2 <= tr // th <= samples
    cfg = dict(out_channels=K, kernel_size=k, padding=pad)

    def ref(x, weight, bias):
        return naive(x, weight, bias, None, pad)[0]

    check_layer(Conv2d(**cfg), [(N, C, H, W)], ref, cuda=False, fd_points=8)


def test_a_block_holds_several_small_samples_and_large_ones_alone():
    # vgg_small's 8x8 layers: a sample has 4 tiles, a block room for a few dozen; evened out
    # over the chunk (16 samples in blocks of 6, 5, 5 rather than 7, 7, 2).
    d, tr = scratch(32, 2, 128, 128, 8, 8, (3, 3))
    assert tr == 2 * 6 and d["V"][2] >= tr * 2 * 128 and d["pix"] == (2, 4 * tr * 8, 128)
    assert d["xp"][0] == 2  # an image per chunk, in training too: nothing is kept for the backward
    assert scratch(1, 1, 128, 128, 8, 8, (3, 3))[1] == 2  # one sample: nothing to group
    assert scratch(32, 2, 32, 32, 32, 32, (3, 3))[1] <= 8  # 32x32: blocks of tile rows, as before


def _random_geometry(rng):
    k = int(rng.choice([2, 3, 3, 3, 4, 5, 5, 6]))
    H, W = int(rng.integers(1, 10)) + k - 1, int(rng.integers(1, 10)) + k - 1
    pad = int(rng.integers(0, 2))
    return int(rng.integers(1, 10)), int(rng.integers(1, 20)), int(rng.integers(1, 20)), H, W, k, pad


@pytest.mark.parametrize("i", range(16))
def test_grouped_blocks_fenced_on_random_geometries(i, monkeypatch):
    # A read past V, M, pix or an image brings NaN (compared below), a write past one fails
    # the run; inference (one padded image per chunk, reused sample after sample within a
    # group) must give the training forward's values.
    rng = np.random.default_rng(100 + i)
    N, C, K, H, W, k, pad = _random_geometry(rng)
    P, Q = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    samples = int(rng.integers(0, 5))
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", _block_for(samples, C, K, P, Q, (k, k)))
    layer = Conv2d(out_channels=K, kernel_size=k, padding=pad)
    x = rng.standard_normal((N, C, H, W))
    gy = rng.standard_normal((N, K, P, Q))
    run = run_fenced(layer, [x], gy, seed=int(rng.integers(1 << 30)))
    y, gx, gw, gb = naive(x, run.params["weight"], run.params["bias"], gy, pad)
    where = f"N{N} C{C} K{K} {H}x{W} k{k} pad{pad}, {samples} samples per block"
    for what, got, want in (("forward", run.y, y), ("input gradient", run.gxs[0], gx),
                            ("weight gradient", run.grads["weight"], gw), ("bias gradient", run.grads["bias"], gb)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{what}, {where}")
    inference = run_fenced(layer, [x], None, run.params, training=False)
    np.testing.assert_allclose(inference.y, run.y, rtol=1e-12, atol=1e-12, err_msg=where)


def _scratch_arrays(N, T, C, K, P, Q, dtype):
    d, tr = scratch(N, T, C, K, P, Q, (3, 3))
    a = {name: np.empty(shape, np.int64 if name == "nonfinite" else dtype) for name, shape in d.items()}
    a["gxp"] = np.empty((T, *d["xp"][1:]), dtype)
    return a, tr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_counts_stay_per_chunk_with_groups(dtype, monkeypatch):
    # The kernels count, per chunk, the non-finite outputs they write (forward) and the
    # non-finite values of gy they read (backward); a grouped block must count each sample's
    # pixels once, never the padding rows between samples in pix. Chunks of 5 and 6 samples
    # in groups of 3: an Inf in sample 4 sits in chunk 0's second group, a NaN of gy in
    # sample 6 in chunk 1's first.
    N, T, C, K, H, W = 11, 2, 4, 5, 5, 7  # 5x7: pix rows past each sample's 5 rows
    monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", _block_for(3, C, K, H, W))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    x[4, 1, 2, 3] = np.inf
    s, tr = _scratch_arrays(N, T, C, K, H, W, dtype)
    assert tr == 2 * 3  # 3 samples of 2 tile rows per block (see the block below)
    y = np.empty((N, K, H, W), dtype)
    assert not conv2d_forward_wino(x, w, b, y, s["U"], s["xp"], s["V"], s["M"], s["pix"], s["R"], s["nonfinite"],
                                   (1, 1), tr)
    bad = ~np.isfinite(y)
    assert bad[:4].sum() == 0 and bad[5:].sum() == 0 and bad[4].sum() > 0
    np.testing.assert_array_equal(s["nonfinite"], [bad[:5].sum(), 0])
    gy = rng.standard_normal((N, K, H, W)).astype(dtype)
    gy[6, 2, 4, 6] = np.nan
    gy[9, 0, 0, 0] = -np.inf
    gw, gb, gx = np.zeros_like(w), np.zeros_like(b), np.empty_like(x)
    x[4, 1, 2, 3] = 0
    assert conv2d_forward_wino(x, w, b, y, s["U"], s["xp"], s["V"], s["M"], s["pix"], s["R"], s["nonfinite"],
                               (1, 1), tr)
    assert not conv2d_backward_wino(x, w, gy, gw, gb, gx, s["U"], s["xp"], s["gxp"], s["V"], s["M"], s["pix"],
                                    s["R"], s["part"], s["nonfinite"], (1, 1), tr)
    np.testing.assert_array_equal(s["nonfinite"], [0, 2])
    assert not gw.any() and not gb.any()  # left alone for the im2col fallback

