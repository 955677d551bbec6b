"""The shifted-taps path's padded image (conv2d_shift_cpu._pad): its phase planes against a naive
NumPy construction, over random geometries, into a buffer full of NaN with a sentinel past the
planes (every plane value written, zero where the padding is, nothing written past them)."""

import numpy as np
import pytest

from numbacnn.layers import conv2d_shift_cpu


def _planes(x, pt, pl, Hp, Wp, sh, sw):
    # plane (c, a, b)[i, j] = the zero-padded image's (i * sh + a, j * sw + b), written out naively
    C, H, W = x.shape
    out = np.zeros((C, sh, sw, Hp, Wp), x.dtype)
    for c in range(C):
        for a in range(sh):
            for b in range(sw):
                for i in range(Hp):
                    for j in range(Wp):
                        h, w = i * sh + a - pt, j * sw + b - pl
                        if 0 <= h < H and 0 <= w < W:
                            out[c, a, b, i, j] = x[c, h, w]
    return out.reshape(-1)


@pytest.mark.parametrize("seed", range(4))
def test_phase_planes_of_the_padded_image_match_a_naive_construction(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        C, H, W = (int(v) for v in rng.integers(1, 9, 3))
        sh, sw, pt, pl = (int(v) for v in rng.integers(1, 4, 2).tolist() + rng.integers(0, 4, 2).tolist())
        R, S = (int(v) for v in rng.integers(1, 6, 2))
        P, Q = (H + 2 * pt - R) // sh + 1, (W + 2 * pl - S) // sw + 1
        if P < 1 or Q < 1:
            continue
        Hp, Wp = P + (R - 1) // sh, Q + (S - 1) // sw  # as shift_forward's planes (no dilation)
        x = rng.standard_normal((C, H, W)).astype(np.float32)
        want = _planes(x, pt, pl, Hp, Wp, sh, sw)
        buf = np.full(want.size + 7, np.nan, np.float32)
        buf[want.size:] = 7.0  # past the planes: never written
        conv2d_shift_cpu._pad(x, buf, pt, pl, Hp, Wp, sh, sw)
        geo = (C, H, W, sh, sw, pt, pl, Hp, Wp)
        np.testing.assert_array_equal(buf[:want.size], want, err_msg=str(geo))
        assert (buf[want.size:] == 7.0).all(), geo
