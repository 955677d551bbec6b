"""The Winograd weight side on its own: ``winograd_weights`` / ``winograd_weights5`` (w -> U, in
the forward's (rows, K) layout and the input gradient's transposed one) and ``winograd_reduce``
/ ``winograd_reduce5`` (the chunks' transformed partials -> gw, gb), against G g G^T and
G^T u G written with NumPy matrices. Channel counts that are not a multiple of the kernels'
16-column runs (conv2d_winograd_weights.WEIGHT_RUN) put a short run at every row's end, and
three chunks of partials are summed; every array is fenced.
"""

import numpy as np
import pytest

from numbacnn.layers import conv2d_winograd5_tiles as tiles5
from numbacnn.layers.conv2d_winograd5_cpu import winograd_reduce5, winograd_weights5
from numbacnn.layers.conv2d_winograd_cpu import _consts
from numbacnn.layers.conv2d_winograd_weights import WEIGHT_RUN, winograd_reduce, winograd_weights
from numbacnn._fenced import _Fence

# F(4x4, 3x3)'s G on the points 0, 1, -1, 2, -2 and infinity (Lavin & Gray's, scaled).
G3 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def _g5() -> np.ndarray:
    # F(4x4, 5x5)'s G (8x5), column by column from g8, which test_conv2d_winograd5 holds to the
    # Toom-Cook matrix: here only the weight kernels' layout and blocking are under test.
    import numba

    c = tiles5.consts5(np.float64)
    col = numba.njit(lambda v, c: tiles5.g8((v[0], v[1], v[2], v[3], v[4]), c))
    return np.array([col(np.eye(5)[i], c) for i in range(5)]).T


def _pieces(R: int, S: int) -> list[tuple[int, int]]:
    # The 3x3 sub-kernels' top-left taps, in the kernels' order (row-major).
    return [(3 * a, 3 * b) for a in range((R + 2) // 3) for b in range((S + 2) // 3)]


def _want_u(w: np.ndarray) -> np.ndarray:
    # (points, J, K): U's forward layout; J = sub * C + ch.
    K, C, R, S = w.shape
    if (R, S) == (5, 5):
        G = _g5()
        return np.einsum("ai,kcij,bj->abck", G, w, G).reshape(64, C, K)
    out = []
    for r0, s0 in _pieces(R, S):
        g = np.zeros((K, C, 3, 3))
        piece = w[:, :, r0:r0 + 3, s0:s0 + 3]
        g[:, :, :piece.shape[2], :piece.shape[3]] = piece
        out.append(np.einsum("ai,kcij,bj->abck", G3, g, G3).reshape(36, C, K))
    return np.concatenate(out, axis=1)


def _fenced(fence: _Fence, a: np.ndarray, what: str) -> np.ndarray:
    return fence.place(a.shape, a.dtype, what, a)


KERNELS = [(3, 3), (4, 4), (2, 5), (6, 6), (5, 5)]


@pytest.mark.parametrize("kernel", KERNELS, ids=[f"{r}x{s}" for r, s in KERNELS])
@pytest.mark.parametrize("transposed", [False, True], ids=["forward", "transposed"])
def test_weight_transform_layouts(kernel, transposed):
    K, C = WEIGHT_RUN + 3, 2 * WEIGHT_RUN + 5
    w = np.random.default_rng(1).standard_normal((K, C, *kernel))
    want = _want_u(w)
    points, J = want.shape[:2]
    fence = _Fence()
    w = _fenced(fence, w, "w")
    U = _fenced(fence, np.full((1, points, J * K), np.nan), "U")
    if kernel == (5, 5):
        winograd_weights5(w, U, tiles5.consts5(np.float64), transposed)
    else:
        winograd_weights(w, U, _consts(np.float64)[1], transposed)
    fence.check(f"winograd weights {kernel}")
    got = U[0].reshape(points, K, J).transpose(0, 2, 1) if transposed else U[0].reshape(points, J, K)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=[f"{r}x{s}" for r, s in KERNELS])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_gradient_reduction(kernel, bias):
    rng = np.random.default_rng(2)
    K, C, T, R, S = WEIGHT_RUN + 3, WEIGHT_RUN + 5, 3, *kernel
    five = kernel == (5, 5)
    points = 64 if five else 36
    J = C if five else len(_pieces(R, S)) * C
    part = rng.standard_normal((T, points, J, K))
    gw0, gy3 = rng.standard_normal((K, C, R, S)), rng.standard_normal((4, K, 7))
    gb0 = rng.standard_normal(K) if bias else np.empty(0)
    want_gw = gw0.copy()
    u = part.sum(axis=0)
    if five:
        G = _g5()
        want_gw += np.einsum("ai,abck,bj->kcij", G, u.reshape(8, 8, C, K), G)
    else:
        for p, (r0, s0) in enumerate(_pieces(R, S)):
            g = np.einsum("ai,abck,bj->kcij", G3, u[:, p * C:(p + 1) * C].reshape(6, 6, C, K), G3)
            h, v = min(3, R - r0), min(3, S - s0)
            want_gw[:, :, r0:r0 + h, s0:s0 + v] += g[:, :, :h, :v]
    fence = _Fence()
    before = part.copy()
    part, gw, gy3, gb = (_fenced(fence, a, n) for a, n in ((part, "part"), (gw0, "gw"), (gy3, "gy3"), (gb0, "gb")))
    if five:
        winograd_reduce5(part, gw, gy3, gb, tiles5.consts5(np.float64))
    else:
        winograd_reduce(part, gw, gy3, gb, _consts(np.float64)[1])
    fence.check(f"winograd reduce {kernel}")
    np.testing.assert_allclose(gw, want_gw, rtol=1e-11, atol=1e-11)
    if bias:
        np.testing.assert_allclose(gb, gb0 + gy3.sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_array_equal(part, before)  # the partials are read, not summed in place
