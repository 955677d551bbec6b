"""A training conv2d of few channels (conv2d_plan.SHIFT_TRAIN_MAX_PRODUCT): its forward on shifted
taps, its backward pixel-major, which makes each sample's padded HWC image itself (the forward
kept none). The random geometries of test_conv2d_bounds.py run this pair fenced in float64."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv2d_plan
from numbacnn.testing import run_fenced

from _conv_cases import cpu_plan as _plan, naive

Conv2d = nc.get_layer("conv2d")


@pytest.fixture
def few(monkeypatch):
    # The rule as measured on AVX2, whatever this machine's vectors (0 elsewhere: pixel-major).
    monkeypatch.setattr(conv2d_plan, "SHIFT_TRAIN_MAX_PRODUCT", 576)


def test_few_channels_train_on_shifted_taps_then_pixel_major(few, monkeypatch):
    lenet2 = Conv2d(out_channels=16, kernel_size=5, padding=2)  # lenet5's conv2 on the 8x8 digits
    plan = _plan(lenet2, (32, 6, 4, 4))
    assert (plan.path, plan.backward_path, plan.kept) == ("shift", "pixel", 0)
    # its backward scratch: pixel-major's (wp, gxp, colt, part), then one padded image a chunk
    T = plan.chunks
    assert [s for s, _ in plan.backward_scratch] == [(16, 5, 5, 6), (T, 8, 8, 6), (T, 16, 150), (T, 16, 150),
                                                     (T, 8, 8, 6)]
    assert _plan(Conv2d(out_channels=16, kernel_size=5, padding=2), (32, 8, 16, 16)).backward_path == "pixel"
    # more channels: pixel-major both ways (12 -> 64: 768)
    assert _plan(Conv2d(out_channels=64, kernel_size=5, padding=2), (32, 12, 8, 8)).path == "pixel"
    # short runs (a first layer): shifted taps, then im2col
    first = _plan(Conv2d(out_channels=6, kernel_size=5, padding=2), (32, 1, 8, 8))
    assert (first.path, first.backward_path) == ("shift", "im2col")
    assert _plan(lenet2, (32, 6, 4, 4), "float64").path == "im2col"
    assert _plan(lenet2, (32, 6, 4, 4), backward=False).path == "shift"  # inference: as before
    with conv2d_plan.force_path("shift"):  # forced: the forward's path, im2col's backward
        assert _plan(lenet2, (31, 6, 4, 4)).backward_path == "im2col"
    monkeypatch.setattr(conv2d_plan, "SHIFT_TRAIN_MAX_PRODUCT", 0)
    assert _plan(lenet2, (32, 6, 4, 4)).path == "pixel"


CASES = [  # (out_channels, kernel, padding), (N, C, H, W): runs of S*C >= 16, C*K <= 576
    ((16, 5, 2), (3, 6, 4, 4)),
    ((8, 3, 1), (5, 16, 7, 9)),
    ((12, 5, 0), (2, 8, 9, 6)),
    ((24, 3, 1), (1, 24, 5, 5)),
    ((6, 3, 2), (4, 6, 3, 8)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c}@{s}" for c, s in CASES])
@pytest.mark.parametrize("want_gx", [True, False])
def test_step_against_pixel_major_and_a_float64_reference(few, case, want_gx, monkeypatch):
    (K, k, pad), shape = case
    layer = Conv2d(out_channels=K, kernel_size=k, padding=pad)
    assert _plan(layer, shape).backward_path == "pixel"
    rng = np.random.default_rng(K * 31 + shape[0])
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = np.nan, np.inf  # as pixel-major's backward carries them
    P, Q = layer.output_shape(shape[1:])[1:]
    gy = rng.standard_normal((shape[0], K, P, Q)).astype(np.float32)
    params = {k: v.astype(np.float32) for k, v in layer.init_params([shape[1:]], rng).items()}
    grads = (want_gx,)
    run = run_fenced(layer, [x], gy, params, needs_input_grad=grads)
    with monkeypatch.context() as mp:
        mp.setenv("NUMBACNN_CONV2D_PATH", "pixel")  # the forward's images kept: the same backward
        pixel = run_fenced(layer, [x], gy, params, needs_input_grad=grads)
    # the same images, kernel and order: the gradients bit for bit (NaN and Inf where they went)
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(run.grads[name], pixel.grads[name], err_msg=name)
    if want_gx:
        np.testing.assert_array_equal(run.gxs[0], pixel.gxs[0])
    assert np.isnan(run.grads["weight"]).any() and not np.isnan(run.grads["bias"]).any()
    # finite data against loops over output pixels (float64)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = 0.5, -0.25
    run = run_fenced(layer, [x], gy, params, needs_input_grad=grads)
    y, gx, gw, gb = naive(x.astype(np.float64), params["weight"].astype(np.float64),
                          params["bias"].astype(np.float64), gy.astype(np.float64), pad)
    np.testing.assert_allclose(run.y, y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run.grads["bias"], gb, rtol=1e-4, atol=1e-4)
    if want_gx:
        np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-4, atol=1e-4)


def test_lenet5_digits_training_step_equals_pixel_major_gradients(few, monkeypatch):
    # conv2 (6 -> 16 at 4x4) in a model: its weight gradient as pixel-major's, the loss level
    from numbacnn import zoo

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 7)
    grads = {}
    for path in ("auto", "pixel"):
        monkeypatch.setenv("NUMBACNN_CONV2D_PATH", path)
        model = zoo.lenet5(input_shape=(1, 8, 8))
        out = model.forward(x, training=True)
        _, gy = nc.losses.cross_entropy(out, labels)
        model.backward(gy, input_grad=False)
        grads[path] = {k: np.array(v) for k, v in model.grads.items()}
    for name, g in grads["pixel"].items():
        np.testing.assert_allclose(grads["auto"][name], g, rtol=2e-5, atol=2e-6, err_msg=name)
