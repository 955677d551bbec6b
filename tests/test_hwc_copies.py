"""The padded-HWC copies of conv2d's pixel-major and Winograd paths (conv2d_hwc_cpu): the plain
ones and the ``_any`` ones in both their orders (``aliased``: one pixel's channels more than 8 to
an L1 set, or not), against NumPy's transposes."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from numbacnn.layers.conv2d_hwc_cpu import (aliased, from_hwc, from_hwc_any, to_hwc, to_hwc_any, to_hwc_rows,
                                           to_hwc_rows_any, to_pixels)


@njit(cache=False)
def _to_hwc(xn, xp, pt, pl, any_order):
    if any_order:
        to_hwc_any(xn, xp, pt, pl)
    else:
        to_hwc(xn, xp, pt, pl)


@njit(cache=False)
def _to_hwc_rows(xn, xp, pt, pl, i0, i1, any_order):
    if any_order:
        to_hwc_rows_any(xn, xp, pt, pl, i0, i1)
    else:
        to_hwc_rows(xn, xp, pt, pl, i0, i1)


@njit(cache=False)
def _from_hwc(xp, xn, pt, pl, any_order):
    if any_order:
        from_hwc_any(xp, xn, pt, pl)
    else:
        from_hwc(xp, xn, pt, pl)


# (C, H, W, dtype): planes whose channels alias in L1 (the channel-block order) and not; channel
# counts that 8 does and does not divide.
CASES = [(3, 5, 7, np.float32), (8, 32, 32, np.float32), (13, 16, 32, np.float32), (20, 32, 16, np.float32),
         (17, 16, 16, np.float32), (40, 16, 16, np.float32), (9, 32, 64, np.float32), (12, 16, 16, np.float64),
         (24, 16, 16, np.float64), (5, 4, 4, np.float64), (200, 8, 8, np.float32)]


def _aliased(C: int, H: int, W: int, dtype: type) -> bool:
    return bool(aliased(np.empty((C, H, W), dtype)))


def test_cases_take_both_orders() -> None:
    taken = {case[:3]: _aliased(*case) for case in CASES}
    assert set(taken.values()) == {True, False}
    # one pixel's channels more than 8 to an L1 set, in planes of 1 KB or more
    assert taken[(20, 32, 16)] and taken[(40, 16, 16)] and taken[(9, 32, 64)] and taken[(24, 16, 16)]
    assert not (taken[(8, 32, 32)] or taken[(13, 16, 32)] or taken[(17, 16, 16)] or taken[(200, 8, 8)])


@pytest.mark.parametrize("any_order", [False, True])
@pytest.mark.parametrize("C, H, W, dtype", CASES)
@pytest.mark.parametrize("pt, pl, extra", [(0, 0, 0), (1, 1, 1), (2, 1, 3)])
def test_to_hwc_is_the_padded_transpose(C: int, H: int, W: int, dtype: type, pt: int, pl: int, extra: int,
                                        any_order: bool) -> None:
    rng = np.random.default_rng(C * H + W)
    xn = rng.standard_normal((C, H, W)).astype(dtype)
    Hp, Wp = H + pt + extra, W + pl + extra + 1  # padded up to whole tiles: rows and columns past x
    want = np.zeros((Hp, Wp, C), dtype)
    want[pt:pt + H, pl:pl + W] = xn.transpose(1, 2, 0)
    xp = np.full((Hp, Wp, C), np.nan, dtype)  # every value must be written: padding as zeros
    _to_hwc(xn, xp, pt, pl, any_order)
    np.testing.assert_array_equal(xp, want)
    back = np.full((C, H, W), np.nan, dtype)
    _from_hwc(want, back, pt, pl, any_order)
    np.testing.assert_array_equal(back, xn)


@pytest.mark.parametrize("any_order", [False, True])
@pytest.mark.parametrize("C, H, W, dtype", CASES)
def test_to_hwc_rows_writes_its_rows_alone(C: int, H: int, W: int, dtype: type, any_order: bool) -> None:
    rng = np.random.default_rng(7)
    xn = rng.standard_normal((C, H, W)).astype(dtype)
    pt, pl = 1, 1
    Hp, Wp = H + 2, W + 2
    want = np.zeros((Hp, Wp, C), dtype)
    want[pt:pt + H, pl:pl + W] = xn.transpose(1, 2, 0)
    for i0, i1 in ((0, 1), (1, Hp // 2), (Hp // 2, Hp), (Hp - 1, Hp)):
        xp = np.full((Hp, Wp, C), -7.0, dtype)
        _to_hwc_rows(xn, xp, pt, pl, i0, i1, any_order)
        np.testing.assert_array_equal(xp[i0:i1], want[i0:i1])
        assert (xp[:i0] == -7.0).all() and (xp[i1:] == -7.0).all()


@pytest.mark.parametrize("any_order", [False, True])
def test_nan_and_signed_zero_are_copied_as_they_are(any_order: bool) -> None:
    xn = np.zeros((16, 32, 32), np.float32)  # the channel-block order
    xn[3, 5, 7], xn[15, 31, 31], xn[0, 0, 0] = np.nan, np.inf, -0.0
    xp = np.empty((34, 34, 16), np.float32)
    _to_hwc(xn, xp, 1, 1, any_order)
    assert np.isnan(xp[6, 8, 3]) and xp[32, 32, 15] == np.inf and np.signbit(xp[1, 1, 0])
    back = np.empty_like(xn)
    _from_hwc(xp, back, 1, 1, any_order)
    np.testing.assert_array_equal(back, xn)
    assert np.signbit(back[0, 0, 0])


@njit(cache=False)
def _to_pixels(yn, pixt, o, la, lb):
    return to_pixels(yn, pixt, o, la, lb)


@pytest.mark.parametrize("C, H, W, dtype", CASES)
def test_to_pixels_transposes_its_pixels_and_counts_nonfinite(C: int, H: int, W: int, dtype: type) -> None:
    rng = np.random.default_rng(11)
    yn = rng.standard_normal((C, H * W)).astype(dtype)
    L = H * W
    yn[C - 1, L - 1], yn[0, L // 2] = np.nan, -np.inf
    for la, lb, o in ((0, L, 0), (L // 3, L, 5 - L // 3), (0, L // 2, 2)):
        pixt = np.full((o + lb + 3, C), 9.0, dtype)
        bad = _to_pixels(yn, pixt, o, la, lb)
        want = np.full_like(pixt, 9.0)
        want[o + la:o + lb] = yn[:, la:lb].T
        np.testing.assert_array_equal(pixt, want)
        assert bad == int((~np.isfinite(yn[:, la:lb])).sum())
