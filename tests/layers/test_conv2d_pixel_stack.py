"""conv2d's pixel-major inference with samples stacked in each product (small output planes,
large weights: conv2d_plan.PIXEL_STACK_*), against a float64 reference by loops
(test_conv2d_bounds.conv_ref)."""

import numpy as np
import pytest
from test_conv2d_bounds import conv_ref

import numbacnn as nc


def _plan(N, C, K, H, R, stride, backward=False, path=None):
    from numbacnn.layers import conv2d_cpu

    P = (H + 2 * (R // 2) - R) // stride + 1
    geo = (1, R, R, stride, stride, 1, 1, R // 2, R // 2)
    with conv2d_cpu.force_path(path or "auto"):
        return conv2d_cpu.conv2d_plan("c", (N, C, H, H), (N, K, P, P), geo, backward, "float32"), geo, P


def test_small_planes_with_large_weights_stack_samples_in_inference():
    # 512->512 at 2x2 (an imported ResNet-18's last stage) and 256->512 at stride 2 take
    # pixel-major with whole samples a block at a batch of two or more; batch 1, training, small
    # weights and planes past PIXEL_STACK_MAX_PIXELS keep their paths.
    from numbacnn.layers.conv2d_plan import PIXEL_STACK_MAX_PIXELS

    for args in ((32, 512, 512, 2, 3, 1), (32, 256, 512, 4, 3, 2), (8, 128, 256, 8, 3, 2)):
        plan, _, P = _plan(*args)
        assert plan.path == "pixel", args
        rows = plan.forward_scratch[2][0][1]  # colt (T, rows, J)
        assert rows > P * P and rows % (P * P) == 0, (args, rows)
    assert _plan(1, 512, 512, 2, 3, 1)[0].path == "shift"
    train = _plan(32, 512, 512, 2, 3, 1, backward=True)[0]
    assert train.path != "pixel" or train.forward_scratch[2][0][1] <= 4
    assert _plan(32, 16, 16, 2, 3, 1)[0].path == "shift"  # 2304 weights
    assert _plan(32, 256, 256, 16, 3, 2)[0].path != "pixel" and 8 * 8 > PIXEL_STACK_MAX_PIXELS


@pytest.mark.parametrize("N,C,K,H,stride,relu", [(5, 24, 20, 3, 1, False), (5, 64, 130, 4, 2, True),
                                                 (3, 16, 8, 2, 1, True), (7, 40, 70, 5, 2, False)])
def test_stacked_products_match_a_float64_reference(N, C, K, H, stride, relu):
    # Chunks of uneven sample counts and a last, shorter block of samples; weights past the
    # blocked transpose's size (64->130: its last block of output channels part-full); stride 2;
    # the scale and bias of a folded batch norm; NaN where PyTorch puts it. A sample's rows put
    # under the wrong neighbour, or a block's output written to the wrong sample, shows.
    from numbacnn.layers import conv2d_cpu

    plan, geo, P = _plan(N, C, K, H, 3, stride, path="pixel")
    assert plan.path == "pixel" and plan.forward_scratch[2][0][1] > P * P  # stacked
    rng = np.random.default_rng(C + K)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    x[N // 2, 1, H // 2, 0] = np.nan
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b, s = rng.standard_normal(K).astype(np.float32), rng.uniform(-2, 2, K).astype(np.float32)
    scratch = tuple(np.empty(shape, dtype or np.float32) for shape, dtype in plan.forward_scratch)
    y = np.full((N, K, P, P), 7.0, np.float32)
    for scale in (None, s):
        conv2d_cpu.conv2d_forward(x, w, b, y, plan, scratch, relu, None, scale)
        cfg = dict(kernel_size=(3, 3), stride=(stride, stride), dilation=(1, 1), groups=1, padding=1)
        with np.errstate(invalid="ignore"):
            want = conv_ref(x.astype(np.float64), w.astype(np.float64), None, np.zeros(y.shape), cfg)[0]
            want = want * (1 if scale is None else s[None, :, None, None]) + b[None, :, None, None]
            want = np.where(want <= 0, 0.0, want) if relu else want
        assert np.array_equal(np.isnan(y), np.isnan(want)) and np.isnan(y).any()
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.nanmax(np.abs(want)))


def test_a_model_on_the_stacked_path_matches_its_training_forward():
    # The whole layer: inference on the stacked path gives the training forward's values
    # (shifted taps there) for a batch whose samples differ, in any order of the batch.
    g = nc.Graph()
    g.output(g.conv2d(g.input((96, 2, 2)), out_channels=704, kernel_size=3, padding=1, name="c"))
    model = nc.Model(g, seed=2)
    x = np.random.default_rng(5).standard_normal((6, 96, 2, 2)).astype(np.float32)
    assert _plan(6, 96, 704, 2, 3, 1)[0].path == "pixel"
    y = model.forward(x)
    np.testing.assert_allclose(y, model.forward(x, training=True, grad=False), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.forward(x[::-1].copy()), y[::-1], rtol=1e-5, atol=1e-5)
