"""conv2d's 5x5 Winograd kernels, F(4x4, 5x5) (conv2d_winograd5_cpu, conv2d_winograd5_tiles).

The 1-D transforms against the matrices of the Toom-Cook construction (written out here as
fractions); the layer, forced onto the Winograd path, against naive loops over the kernel's
taps and float64 finite differences: tiles hanging over the edge, uneven paddings, channel
counts past one 16-lane group, blocks of one tile row, no bias; every array fenced.
"""

from fractions import Fraction as Fr

import numba
import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv2d_winograd5_tiles as tiles
from numbacnn.layers import conv2d_winograd_cpu
from numbacnn.testing import check_layer, run_fenced

Conv2d = nc.get_layer("conv2d")

_PTS = [Fr(0), Fr(1), Fr(-1), Fr(2), Fr(-2), Fr(1, 2), Fr(-1, 2)]  # and infinity


def _matrices():
    """A^T (4x8), G (8x5), B^T (8x8) of F(4, 5) on _PTS: A^T's rows the points' powers, G's the
    powers over the product of the differences to the other points; B^T the one matrix that
    makes A^T[(G g) * (B^T d)] the correlation of d and g, solved for here."""
    AT = np.array([[float(p ** i) for p in _PTS] + [float(i == 3)] for i in range(4)])
    G = np.zeros((8, 5))
    for j, p in enumerate(_PTS):
        f = np.prod([p - q for q in _PTS if q != p]) if j else Fr(-1) * np.prod([-q for q in _PTS[1:]])
        G[j] = [float(p ** k / f) for k in range(5)]
    G[7, 4] = 1.0
    # sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k] for all i, k, l: linear in BT
    rows = [np.concatenate([np.eye(8)[l] * AT[i, j] * G[j, k] for j in range(8)])
            for i in range(4) for k in range(5) for l in range(8)]
    rhs = [float(l == i + k) for i in range(4) for k in range(5) for l in range(8)]
    BT = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(8, 8)
    return AT, G, BT


@numba.njit
def _apply(d8, d4, d5, c):
    t8 = (d8[0], d8[1], d8[2], d8[3], d8[4], d8[5], d8[6], d8[7])
    return (tiles.bt8(t8, c), tiles.b8(t8, c), tiles.at8(t8, c), tiles.a8((d4[0], d4[1], d4[2], d4[3]), c),
            tiles.g8((d5[0], d5[1], d5[2], d5[3], d5[4]), c), tiles.gt8(t8, c))


def test_winograd5_transforms_match_their_matrices():
    AT, G, BT = _matrices()
    rng = np.random.default_rng(0)
    d = rng.standard_normal(8)
    g = rng.standard_normal(5)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, "valid"), atol=1e-12)  # the matrices
    d4 = rng.standard_normal(4)
    got = _apply(d, d4, g, tiles.consts5(np.float64))
    for name, a, want in zip(("B^T d", "B v", "A^T m", "A y", "G g", "G^T u"), got,
                             (BT @ d, BT.T @ d, AT @ d, AT.T @ d4, G @ g, G.T @ d)):
        np.testing.assert_allclose(np.array(a), want, rtol=1e-13, atol=1e-13, err_msg=name)


def test_5x5_takes_f4x4_5x5_and_others_the_sub_kernels():
    U5 = conv2d_winograd_cpu.scratch(2, 2, 16, 8, 10, 10, (5, 5))[0]["U"]
    assert U5 == (1, 64, 16 * 8)  # one 8x8 transform per channel pair
    assert conv2d_winograd_cpu.scratch(2, 2, 16, 8, 10, 10, (5, 4))[0]["U"] == (1, 36, 4 * 16 * 8)
    assert conv2d_winograd_cpu.scratch(2, 2, 16, 8, 10, 10, (3, 3))[0]["U"] == (1, 36, 16 * 8)


def _naive(x, w, b, pads):
    """y of a stride-1 5x5 conv2d: one product per kernel tap over the zero-padded input."""
    pt, pb, pl, pr = pads
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    P, Q = xp.shape[2] - 4, xp.shape[3] - 4
    y = np.zeros((N, w.shape[0], P, Q)) + (0 if b is None else b[None, :, None, None])
    for r in range(5):
        for s in range(5):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + P, s:s + Q], w[:, :, r, s])
    return y


def _ref(pads):
    return lambda x, weight, bias=None: _naive(x, weight, bias, pads)


CASES = [  # (config, input shape, (top, bottom, left, right) pads)
    (dict(out_channels=3, kernel_size=5, padding=2), (2, 2, 9, 7), (2, 2, 2, 2)),
    (dict(out_channels=18, kernel_size=5, padding=(0, 3, 1, 4), bias=False), (1, 20, 6, 9), (0, 3, 1, 4)),
    (dict(out_channels=2, kernel_size=5), (3, 3, 5, 6), (0, 0, 0, 0)),  # a 1x2 output
]


@pytest.mark.parametrize("cfg,shape,pads", CASES, ids=[f"{c}@{s}" for c, s, _ in CASES])
@pytest.mark.parametrize("block", ["default", "one-tile-row"])
def test_conv2d_winograd5_against_loops_and_finite_differences(cfg, shape, pads, block, monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    if block == "one-tile-row":
        monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", 1)
    check_layer(Conv2d(**cfg), [shape], _ref(pads), cuda=False, fd_points=6)


@pytest.mark.parametrize("seed", range(4))
def test_conv2d_winograd5_fenced(seed, monkeypatch):
    # Random sizes and paddings, every array fenced (a read or write past any array fails).
    rng = np.random.default_rng(100 + seed)
    C, K = int(rng.integers(1, 35)), int(rng.integers(1, 35))
    pads = tuple(int(v) for v in rng.integers(0, 5, 4))
    H, W = int(rng.integers(max(1, 5 - pads[0] - pads[1]), 14)), int(rng.integers(max(1, 5 - pads[2] - pads[3]), 14))
    layer = Conv2d(out_channels=K, kernel_size=5, padding=pads, bias=bool(rng.integers(2)))
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")
    if seed % 2:
        monkeypatch.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", 1)
    x = rng.standard_normal((int(rng.integers(1, 4)), C, H, W))
    gy = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
    run = run_fenced(layer, [x], gy, seed=seed)
    w, b = run.params["weight"], run.params.get("bias")
    np.testing.assert_allclose(run.y, _naive(x, w, b, pads), rtol=1e-9, atol=1e-9)
    # the input gradient: gy correlated with the flipped, transposed weights, padded by 4 - pads
    Hp, Wp = H + pads[0] + pads[1], W + pads[2] + pads[3]
    gxp = _naive(gy, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), None, (4, 4, 4, 4))
    np.testing.assert_allclose(run.gxs[0], gxp[:, :, pads[0]:pads[0] + H, pads[2]:pads[2] + W][:, :, :H, :W],
                               rtol=1e-9, atol=1e-9)
    assert gxp.shape[2:] == (Hp, Wp)
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    P, Q = gy.shape[2:]
    gw = np.stack([np.stack([np.einsum("nchw,nkhw->kc", xp[:, :, r:r + P, s:s + Q], gy) for s in range(5)], -1)
                   for r in range(5)], -2)
    np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-9, atol=1e-9)
    if layer.bias:
        np.testing.assert_allclose(run.grads["bias"], gy.sum(axis=(0, 2, 3)), rtol=1e-9, atol=1e-9)
