"""lp_pool2d's window rules shared by its CPU kernels and CUDA twins: torch.sign and the
max-of-|x| window that p = +-inf takes.

``jitable`` helpers (see numbacnn/_jit.py): written once and compiled for both targets. The
power rule ``_pow`` stays per device on purpose: the CUDA one spells NaN as 0 / 0, which a
CPU kernel (Python's error model) would raise on.
"""

import math

from .._jit import jitable

__all__ = ["sign", "window_max"]


@jitable
def sign(v, one):
    """torch.sign: -1, 0 or 1 (of v's type, as ``one``), and 0 for NaN."""
    zero = one - one
    return one if v > zero else (-one if v < zero else zero)


@jitable
def window_max(x, n, ch, i, j, geometry, sign):
    """(max over the window of sign * |x|, its flat index): max_pool2d's rule (first maximum,
    last NaN; taps past a ceil-mode edge skipped)."""
    R, S, sh, sw = geometry
    H, W = x.shape[2], x.shape[3]
    best, at = -x.dtype.type(math.inf), -1  # the float32 constant negated, not a float64 cast
    for h in range(i * sh, min(i * sh + R, H)):
        for w in range(j * sw, min(j * sw + S, W)):
            v = sign * abs(x[n, ch, h, w])
            if at < 0 or v > best or v != v:
                best, at = v, h * W + w
    return best, at
