"""conv2d's CPU path choice (conv2d_plan.cpu_path): forcing a path, and the default's
thresholds where they changed with measurements (Winograd on small maps in inference, the
pixel-major path giving way on wide layers at batch 1)."""

import numpy as np
import pytest

import numbacnn as nc
from _conv_cases import cpu_path

Conv2d = nc.get_layer("conv2d")


def test_conv2d_force_path_chooses_and_refuses_what_cannot_run(monkeypatch):
    from numbacnn.layers.conv2d_cpu import force_path

    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6))

    def model(**cfg):
        g = nc.Graph()
        g.conv2d(g.input((4, 6, 6)), name="conv_a", **cfg)
        return nc.Model(g, seed=0, dtype="float64")

    layer = Conv2d(out_channels=4, kernel_size=3)
    with force_path("winograd"):
        assert cpu_path(layer, x.shape) == "winograd"
        with force_path("im2col"):  # the innermost wins
            assert cpu_path(layer, x.shape) == "im2col"
        m = model(out_channels=4, kernel_size=3, stride=2)
        with pytest.raises(ValueError, match=r"node 'conv_a': conv2d path 'winograd' was forced .*stride 2x2.*"
                                             r"or use 'auto'"):
            m.forward(x)
    assert cpu_path(layer, x.shape) == "shift"  # 4 channels: the default's pick (im2col's backward)
    with force_path("pixel"), pytest.raises(ValueError, match=r"node 'conv_a': conv2d path 'pixel'.*groups 2"):
        model(out_channels=4, kernel_size=3, groups=2).forward(x)
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "pixel")
    assert cpu_path(layer, x.shape) == "pixel"
    with force_path("auto"):  # force_path before the environment
        assert cpu_path(layer, x.shape) == "shift"
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "fast")
    with pytest.raises(ValueError, match=r"NUMBACNN_CONV2D_PATH: unknown conv2d path 'fast': expected one of auto"):
        cpu_path(layer, x.shape)
    with pytest.raises(ValueError, match="force_path: unknown conv2d path 'wino'"):
        with force_path("wino"):
            pass


def test_conv2d_cpu_inference_takes_winograd_on_small_maps_from_a_batch_of_two():
    # Several samples share a Winograd block, so inference wins from 3x3 outputs (googlenet_mini's
    # 64->128 at 4x4, batch 256: 2.3 against 5.8 ms pixel-major); training, and batch 1, keep 6x6.
    layer = Conv2d(out_channels=128, kernel_size=3, padding=1)
    assert cpu_path(layer, (2, 64, 4, 4), backward=False) == "winograd"
    assert cpu_path(layer, (256, 64, 3, 3), backward=False) == "winograd"
    assert cpu_path(layer, (256, 64, 2, 2), backward=False) != "winograd"  # 4 outputs: under 9
    assert cpu_path(layer, (1, 64, 4, 4), backward=False) != "winograd"
    assert cpu_path(layer, (256, 64, 4, 4)) != "winograd"  # a training step
    assert cpu_path(layer, (256, 64, 6, 6)) == "winograd"
    assert cpu_path(Conv2d(out_channels=128, kernel_size=5, padding=2), (256, 64, 2, 2), backward=False) != "winograd"
    assert cpu_path(layer, (256, 64, 4, 4), "float64", backward=False) == "im2col"


def test_conv2d_cpu_inference_takes_5x5_winograd_on_small_maps_from_a_batch_of_four():
    # One F(4x4, 5x5) tile a sample: inference from a batch of 4 takes it from 4x4 outputs
    # (64->128 at 4x4, batch 4: 97 against 383 us pixel-major), and from a batch of 32 with
    # 8 channels (googlenet_mini's 8->16 at 16x16, batch 256: 2.3 against 3.3 ms); training,
    # batch 1 to 3 and fewer channels keep the rules before.
    five = Conv2d(out_channels=128, kernel_size=5, padding=2)
    assert cpu_path(five, (4, 64, 4, 4), backward=False) == "winograd"
    assert cpu_path(five, (4, 64, 3, 5), backward=False) != "winograd"  # 15 outputs
    assert cpu_path(five, (3, 64, 4, 4), backward=False) != "winograd"
    assert cpu_path(five, (256, 64, 4, 4)) != "winograd"  # a training step
    assert cpu_path(five, (256, 64, 8, 8)) == "winograd"
    narrow = Conv2d(out_channels=16, kernel_size=5, padding=2)
    assert cpu_path(narrow, (32, 8, 16, 16), backward=False) == "winograd"
    assert cpu_path(narrow, (31, 8, 16, 16), backward=False) != "winograd"
    assert cpu_path(narrow, (32, 7, 16, 16), backward=False) != "winograd"
    assert cpu_path(narrow, (32, 8, 16, 16)) != "winograd"
    eight = Conv2d(out_channels=8, kernel_size=5, padding=2)  # 8->8: C*K 64, lost at batch 32 (91 / 97 us)
    assert cpu_path(eight, (32, 8, 8, 8), backward=False) != "winograd"
    assert cpu_path(Conv2d(out_channels=20, kernel_size=5, padding=2), (32, 10, 4, 4), backward=False) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (32, 8, 16, 16), backward=False) != "winograd"


def test_conv2d_cpu_leaves_pixel_major_where_its_weight_layout_outweighs_the_rows():
    # The pixel-major path lays out K*C*R*S weights per call for N*P*Q output rows: a wide
    # layer on a small map at batch 1 (googlenet_mini's 64->128 3x3 at 4x4) takes im2col's
    # backward (its forward on shifted taps), the same layer at a training batch pixel-major.
    layer = Conv2d(out_channels=128, kernel_size=3, padding=1)
    assert cpu_path(layer, (1, 64, 4, 4)) == "shift"
    assert cpu_path(layer, (32, 64, 4, 4)) == "pixel"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (1, 64, 4, 4)) == "pixel"
    # the boundary: K = 4 N P Q leaves, one channel fewer stays
    assert cpu_path(Conv2d(out_channels=64, kernel_size=3, padding=1), (1, 64, 4, 4)) == "shift"
    assert cpu_path(Conv2d(out_channels=63, kernel_size=3, padding=1), (1, 64, 4, 4)) == "pixel"
