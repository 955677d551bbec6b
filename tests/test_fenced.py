"""numbacnn.testing.run_fenced catches what it is for: reads and writes just past an array."""

import re

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import FenceError, run_fenced


def _past(a, extra):
    """A flat view of ``a`` running ``extra`` elements past its end: what a kernel with a
    wrong bound indexes."""
    flat = a.reshape(-1)
    return np.lib.stride_tricks.as_strided(flat, shape=(flat.size + extra,))


class Shift(nc.Layer):
    """y[i] = x[i + shift] (reads past x when shift > 0); backward writes gx one past its end
    when ``spill``, or into gy when ``scribble``."""

    name = "_test_shift"

    def __init__(self, shift: int = 0, spill: bool = False, scribble: bool = False, before: bool = False) -> None:
        self.shift, self.spill, self.scribble, self.before = shift, spill, scribble, before

    def output_shape(self, x_shape):
        return x_shape

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        y.reshape(-1)[:] = _past(x, self.shift)[self.shift:]
        return y

    def backward_cpu(self, ctx, gy):
        gx = ctx.empty_like(gy)
        gx[...] = gy
        if self.spill:
            _past(gx, 1)[gx.size] = 0.0
        if self.before:
            flat = gx.reshape(-1)
            np.lib.stride_tricks.as_strided(flat, shape=(2,), strides=(-flat.itemsize,))[1] = 0.0  # flat[-1]
        if self.scribble:
            gy.reshape(-1)[0] += 1.0
        return gx


def test_a_clean_layer_passes_and_returns_its_results():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    run = run_fenced(Shift(), [x], np.ones_like(x))
    np.testing.assert_array_equal(run.y, x)
    np.testing.assert_array_equal(run.gxs[0], np.ones_like(x))


def test_a_read_past_the_input_brings_nan():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    run = run_fenced(Shift(shift=1), [x], None)
    assert np.isnan(run.y.reshape(-1)[-1]) and not np.isnan(run.y.reshape(-1)[:-1]).any()


@pytest.mark.parametrize("kw, text", [(dict(spill=True), "+0 past its end"), (dict(before=True), "-1 (before")])
def test_a_write_outside_an_output_is_reported(kw, text):
    x = np.ones((2, 3))
    with pytest.raises(FenceError, match="wrote outside scratch/output buffer .*" + re.escape(text)):
        run_fenced(Shift(**kw), [x], np.ones_like(x))


def test_a_write_into_the_output_gradient_is_reported():
    x = np.ones((2, 3))
    with pytest.raises(FenceError, match="wrote into an array it was given to read"):
        run_fenced(Shift(scribble=True), [x], np.ones_like(x))
