"""conv2d_cpu.conv2d_forward's ``scale``: a batch norm folded into the convolution (numbacnn._fold)
as y = conv2d(x, w) * scale + b per output channel, on every CPU path, against a float64
reference by loops (test_conv2d_bounds.conv_ref)."""

import numpy as np
import pytest
from test_conv2d_bounds import conv_ref

# (path, N, C, K, kernel, padding, H, W): im2col whole samples, split rows and split channels
# (1x1, batch 1); shifted taps' scalar epilogue (3x3) and its direct store (1x1 from 16 to 64
# channels); pixel-major; Winograd 3x3 and 5x5; one-row Winograd (a 1x5 kernel on one row).
CASES = [("im2col", 2, 5, 7, 3, 1, 9, 8), ("im2col", 1, 16, 32, 3, 1, 32, 32), ("im2col", 1, 16, 64, 1, 0, 32, 32),
         ("shift", 1, 6, 10, 3, 1, 11, 9), ("shift", 2, 16, 64, 1, 0, 8, 8), ("pixel", 2, 8, 12, 3, 1, 10, 10),
         ("winograd", 2, 16, 16, 3, 1, 12, 12), ("winograd", 4, 16, 16, 5, 2, 12, 12),
         ("winograd", 2, 16, 16, (1, 5), (0, 2), 1, 40)]


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-N{c[1]}-{c[4]}" for c in CASES])
def test_scale_is_applied_per_output_channel_on_every_path(case, relu, residual):
    # Each path either scales as it writes y (im2col, shifted taps) or multiplies a copy of w
    # (the others): y = (conv(x, w) * s + b) (+ r), relu'd, NaN where PyTorch's folded batch
    # norm puts it; w itself is left as it was. A scale skipped, applied to the wrong channel,
    # or applied after the bias or residual shows against the reference.
    from numbacnn.layers import conv2d_cpu

    path, N, C, K, kernel, pad, H, W = case
    R, S = (kernel, kernel) if isinstance(kernel, int) else kernel
    pt, pl = (pad, pad) if isinstance(pad, int) else pad
    rng = np.random.default_rng(R * 10 + K)
    P, Q = H + 2 * pt - R + 1, W + 2 * pl - S + 1
    geo = (1, R, S, 1, 1, 1, 1, pt, pl)
    with conv2d_cpu.force_path(path):
        plan = conv2d_cpu.conv2d_plan("c", (N, C, H, W), (N, K, P, Q), geo, False, "float32")
    assert plan.path == ("winograd1d" if H == 1 else path)
    scratch = tuple(np.empty(shape, dtype or np.float32) for shape, dtype in plan.forward_scratch)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    x[-1, 0, H // 2, W // 3] = np.nan
    w = rng.standard_normal((K, C, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    s = rng.uniform(-2.0, 2.0, K).astype(np.float32)
    r = rng.standard_normal((N, K, P, Q)).astype(np.float32) if residual else None
    w0 = w.copy()
    y = np.full((N, K, P, Q), 7.0, np.float32)
    for _ in range(2):  # the second call through the plan's kept arguments where it keeps them
        conv2d_cpu.conv2d_forward(x, w, b, y, plan, scratch, relu, r, s)
    cfg = dict(kernel_size=(R, S), stride=(1, 1), dilation=(1, 1), groups=1, padding=(pt, pl))
    with np.errstate(invalid="ignore"):
        want = conv_ref(x.astype(np.float64), w.astype(np.float64), None, np.zeros((N, K, P, Q)), cfg)[0]
        want = want * s[None, :, None, None] + b[None, :, None, None] + (0 if r is None else r)
        want = np.where(want <= 0, 0.0, want) if relu else want
    assert np.array_equal(w, w0)
    assert np.array_equal(np.isnan(y), np.isnan(want)) and np.isnan(y).any()
    np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4 * np.nanmax(np.abs(want)))


def test_a_scale_of_the_wrong_dtype_length_or_layout_is_refused_before_any_compute():
    from numbacnn.layers import conv2d_cpu

    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)
    x = np.ones((2, 3, 5, 5), np.float32)
    w, b = np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)
    for path in ("im2col", "shift", "pixel", "winograd"):
        with conv2d_cpu.force_path(path):
            plan = conv2d_cpu.conv2d_plan("c", x.shape, (2, 4, 5, 5), geo, False, "float32")
        scratch = tuple(np.empty(shape, dtype or np.float32) for shape, dtype in plan.forward_scratch)
        for bad in (np.ones(4), np.ones(5, np.float32), np.ones(8, np.float32)[::2]):
            y = np.full((2, 4, 5, 5), 7.0, np.float32)
            with pytest.raises(ValueError, match="scale must be a contiguous float32 array of 4 values"):
                conv2d_cpu.conv2d_forward(x, w, b, y, plan, scratch, False, None, bad)
            assert (y == 7.0).all()
