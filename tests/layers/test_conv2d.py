import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv2d_plan
from numbacnn.testing import check_layer
from _conv_cases import cpu_path

Conv2d = nc.get_layer("conv2d")


def _pads(padding, kernel, dilation):
    """(top, bottom, left, right), worked out here independently of the layer."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_ref(cfg):
    """Naive NumPy conv2d: explicit loops over output channel and pixel, einsum over the window."""
    (R, S), (sh, sw), (dh, dw) = _pair(cfg["kernel_size"]), _pair(cfg.get("stride", 1)), _pair(cfg.get("dilation", 1))
    pt, pb, pl, pr = _pads(cfg.get("padding", 0), (R, S), (dh, dw))
    groups = cfg.get("groups", 1)

    def ref(x, weight, bias=None):
        N, C, H, W = x.shape
        K, Cg = weight.shape[:2]
        xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
        xp[:, :, pt:pt + H, pl:pl + W] = x
        P = (H + pt + pb - dh * (R - 1) - 1) // sh + 1
        Q = (W + pl + pr - dw * (S - 1) - 1) // sw + 1
        y = np.zeros((N, K, P, Q))
        for k in range(K):
            c0 = k // (K // groups) * Cg
            for p in range(P):
                for q in range(Q):
                    win = xp[:, c0:c0 + Cg, p * sh:p * sh + dh * (R - 1) + 1:dh, q * sw:q * sw + dw * (S - 1) + 1:dw]
                    y[:, k, p, q] = np.einsum("ncrs,crs->n", win, weight[k])
            if bias is not None:
                y[:, k] += bias[k]
        return y

    return ref


# (constructor arguments, input shape): strides, paddings, dilation, groups, bias, odd sizes.
CONFIGS = [
    (dict(out_channels=4, kernel_size=3), (2, 3, 7, 6)),
    (dict(out_channels=5, kernel_size=3, stride=2, padding=1), (2, 3, 7, 6)),
    (dict(out_channels=3, kernel_size=3, padding="same", dilation=2), (2, 2, 7, 8)),
    (dict(out_channels=3, kernel_size=4, padding="same"), (1, 2, 6, 7)),
    (dict(out_channels=4, kernel_size=(2, 3), padding="valid"), (1, 3, 5, 6)),
    (dict(out_channels=4, kernel_size=3, padding=(1, 0, 2, 1)), (2, 3, 6, 5)),
    (dict(out_channels=6, kernel_size=3, padding=1, groups=2), (2, 4, 5, 5)),
    (dict(out_channels=6, kernel_size=3, stride=2, groups=3), (2, 3, 7, 7)),
    (dict(out_channels=3, kernel_size=(3, 1), stride=(1, 2), bias=False), (2, 3, 6, 7)),
    (dict(out_channels=3, kernel_size=5, stride=3, padding=2), (1, 5, 9, 11)),
    (dict(out_channels=2, kernel_size=3, stride=(2, 1), padding=(2, 1), dilation=(2, 1)), (2, 2, 9, 6)),
    (dict(out_channels=4, kernel_size=1), (2, 6, 4, 5)),
    (dict(out_channels=4, kernel_size=1, groups=2, bias=False), (2, 6, 3, 3)),
    (dict(out_channels=3, kernel_size=1, stride=2), (2, 3, 5, 5)),
]
IDS = [",".join(f"{k}={v}" for k, v in cfg.items()) + f"@{shape}" for cfg, shape in CONFIGS]


@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv2d_cpu(cfg, shape):
    check_layer(Conv2d(**cfg), [shape], conv_ref(cfg), cuda=False)


# The CPU layer has two im2col paths (conv2d_cpu): channel-major for few input channels and
# grouped, strided or 1x1 convolutions, pixel-major otherwise. The configs above are small, so most
# take the first; here every ungrouped, non-1x1 one is forced down the second.
PIXEL_MAJOR = [(cfg, shape) for cfg, shape in CONFIGS if cfg.get("groups", 1) == 1 and cfg["kernel_size"] != 1]


@pytest.mark.parametrize("cfg,shape", PIXEL_MAJOR, ids=[IDS[CONFIGS.index(c)] for c in PIXEL_MAJOR])
def test_conv2d_cpu_pixel_major(cfg, shape, monkeypatch):
    layer = Conv2d(**cfg)
    # The kernels handle strides and dilations too, though the layer sends only stride-1
    # convolutions with enough channels their way.
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "pixel")
    assert cpu_path(layer, shape) == "pixel"
    check_layer(layer, [shape], conv_ref(cfg), cuda=False)


@pytest.mark.parametrize("shape", [(2, 16, 6, 7), (3, 24, 5, 5)])
def test_conv2d_cpu_takes_the_pixel_major_path_on_wide_inputs(shape):
    # Enough channels for the default threshold, with uneven blocks: 3 pixels per block.
    from numbacnn.layers import conv2d_pixel_cpu

    cfg = dict(out_channels=5, kernel_size=3, padding=(1, 2, 0, 1))
    layer = Conv2d(**cfg)
    # (a training step: its forward on shifted taps where conv2d_plan.SHIFT_TRAIN_MAX_PRODUCT allows)
    assert cpu_path(layer, shape) == ("shift" if conv2d_plan.SHIFT_TRAIN_MAX_PRODUCT >= 5 * shape[1] else "pixel")
    J = shape[1] * 9
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBACNN_CONV2D_PATH", "pixel")  # float64 too (its default is im2col)
        mp.setattr(conv2d_pixel_cpu, "_BLOCK_ELEMENTS", 3 * J)
        assert conv2d_pixel_cpu.pixel_block(40, J) == 3
        check_layer(layer, [shape], conv_ref(cfg), cuda=False)


# Stride-1 convolutions with enough channels take the Winograd path (conv2d_winograd_cpu),
# kernels past 3x3 as 3x3 sub-kernels. Forced here on small ones: odd and even output sizes
# (tiles hanging over the edge), a 1x1 output, uneven and oversized paddings, no bias, 2x3 to
# 6x6 kernels.
WINOGRAD = [(cfg, shape) for cfg, shape in CONFIGS if "stride" not in cfg and "dilation" not in cfg
            and "groups" not in cfg and cfg["kernel_size"] != 1] + [
    (dict(out_channels=3, kernel_size=3, padding="same", bias=False), (2, 2, 5, 4)),
    (dict(out_channels=2, kernel_size=3, padding=(3, 0, 2, 2)), (1, 3, 4, 3)),
    (dict(out_channels=3, kernel_size=3), (3, 2, 3, 3)),
    (dict(out_channels=3, kernel_size=5, padding=2), (2, 2, 9, 7)),
    (dict(out_channels=2, kernel_size=(6, 5), padding=(1, 2, 0, 3)), (1, 3, 8, 7)),
    (dict(out_channels=2, kernel_size=(5, 2)), (2, 2, 6, 5)),
]


def _force_winograd(monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")


@pytest.mark.parametrize("cfg,shape", WINOGRAD, ids=[f"{c}@{s}" for c, s in WINOGRAD])
def test_conv2d_cpu_winograd(cfg, shape, monkeypatch):
    _force_winograd(monkeypatch)
    layer = Conv2d(**cfg)
    assert cpu_path(layer, shape) == "winograd"
    check_layer(layer, [shape], conv_ref(cfg), cuda=False)


@pytest.mark.parametrize("rows", [1, 2])
def test_conv2d_cpu_winograd_by_default_in_uneven_tile_blocks(rows):
    # Enough channels for the default threshold; blocks of one or two tile rows over three
    # rows of 4x4 tiles, the last one half outside a 10x6 output: block boundaries and edges.
    from numbacnn.layers import conv2d_winograd_cpu

    cfg, shape = dict(out_channels=16, kernel_size=3, padding=(1, 0, 1, 1)), (2, 16, 11, 6)
    layer = Conv2d(**cfg)
    assert cpu_path(layer, shape) == "winograd"
    assert cpu_path(Conv2d(out_channels=15, kernel_size=3), shape) != "winograd"
    # 5x5 from 64 output pixels on (network3's conv2, 20->40 at 8x8: conv2d_plan.WINOGRAD5_MIN_PIXELS)
    assert cpu_path(Conv2d(out_channels=40, kernel_size=5), (1, 20, 12, 12)) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=5, padding=2), (1, 16, 8, 8)) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=5, padding=2), (1, 16, 7, 9)) != "winograd"
    # 4x4 and 6x6 (3x3 sub-kernels) only from 256 output pixels on
    assert cpu_path(Conv2d(out_channels=16, kernel_size=4, padding=2), (1, 16, 15, 15)) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=4, padding=2), (1, 16, 14, 15)) != "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=7, padding=3), (1, 16, 32, 32)) != "winograd"
    # 3x3 from 36 output pixels on (4x4 outputs: the column paths won, conv2d_plan.WINOGRAD3_MIN_PIXELS)
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (1, 16, 6, 6)) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (1, 16, 4, 9)) == "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (1, 16, 5, 7)) != "winograd"
    assert cpu_path(Conv2d(out_channels=16, kernel_size=3, padding=1), (32, 128, 4, 4)) != "winograd"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBACNN_CONV2D_PATH", "winograd")  # float64 too (its default is im2col)
        mp.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", rows * 36 * 2 * 32)
        assert conv2d_winograd_cpu.scratch(2, 2, 16, 16, 10, 6, (3, 3))[1] == rows
        check_layer(layer, [shape], conv_ref(cfg), cuda=False, fd_points=6)


def test_conv2d_winograd_keeps_nothing_from_forward_to_backward():
    # A training forward on Winograd used to keep its transformed weights and a padded copy of
    # every sample (vgg_small, batch 32: 31.5 MB step peak against 22.7 without); the backward
    # now makes both again from x and w: the plan keeps no forward scratch, the forward's U
    # holds the one plane its products read, and the backward's scratch holds per-chunk images.
    from numbacnn.layers import conv2d_cpu

    layer = Conv2d(out_channels=16, kernel_size=3, padding=1)
    shape = (5, 16, 8, 8)
    plan = conv2d_cpu.conv2d_plan("c", shape, (5, 16, 8, 8), layer._geometry(), True, "float32")
    assert plan.path == "winograd" and plan.kept == 0
    assert plan.forward_scratch[0][0][0] == 1  # U: one plane
    images = [s for s, _ in plan.backward_scratch if s[1:] == (10, 10, 16)]  # 8x8 padded to whole tiles
    assert len(images) == 2 and all(s[0] == plan.chunks for s in images)  # gxp and xp, per chunk
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    y = np.empty((5, 16, 8, 8), np.float32)
    scratch = tuple(np.empty(s, d or np.float32) for s, d in plan.forward_scratch)
    assert conv2d_cpu.conv2d_forward(x, w, np.empty(0, np.float32), y, plan, scratch) == ("winograd",)


def test_conv2d_float64_takes_im2col_unless_forced(monkeypatch):
    # float64 is for accuracy: the Winograd and pixel-major kernels never run (nor compile)
    # in it unless forced; float32 keeps the fast paths.
    from numbacnn.layers import conv2d_cpu, conv2d_winograd_cpu

    wino, pixel = (Conv2d(out_channels=16, kernel_size=3, padding=1), (2, 16, 6, 7)), \
        (Conv2d(out_channels=64, kernel_size=3), (2, 16, 6, 7))  # past SHIFT_TRAIN_MAX_PRODUCT
    for layer, shape in (wino, pixel):
        assert cpu_path(layer, shape, "float64") == "im2col"
    assert cpu_path(*wino) == "winograd" and cpu_path(*pixel) == "pixel"
    for path, (layer, shape) in (("winograd", wino), ("pixel", pixel)):
        with conv2d_cpu.force_path(path):
            assert cpu_path(layer, shape, "float64") == path
    # the layer plans with the model's dtype
    ran = []
    original = conv2d_winograd_cpu.conv2d_forward_wino
    monkeypatch.setattr(conv2d_winograd_cpu, "conv2d_forward_wino",
                        lambda *a: ran.append(a[0].dtype) or original(*a))
    g = nc.Graph()
    g.conv2d(g.input((16, 6, 7)), name="c", out_channels=16, kernel_size=3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 16, 6, 7))
    y64 = nc.Model(g, seed=0, dtype="float64").forward(x)
    y32 = nc.Model(g, seed=0, dtype="float32").forward(x.astype(np.float32))
    assert ran == [np.float32]
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-5 * np.abs(y64).max())


@pytest.mark.parametrize("cfg,shape", [(dict(out_channels=32, kernel_size=3, padding=1), (2, 48, 9, 10)),
                                       (dict(out_channels=24, kernel_size=5, padding=2), (2, 16, 16, 17))])
def test_conv2d_cpu_winograd_float32_error(cfg, shape):
    # F(4x4, 3x3) rounds about ten times more than the direct sum in float32 (its transforms
    # scale by up to 8 and 1/24): still within 2e-5 of the largest value at realistic sizes,
    # against the float64 naive loops.
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    g = nc.Graph()
    g.conv2d(g.input(shape[1:]), name="c", **cfg)
    m = nc.Model(g, seed=3, dtype="float32")
    assert cpu_path(Conv2d(**cfg), shape) == "winograd"
    y = m.forward(x.astype(np.float32), training=True)
    w, b = (m.params[k].astype(np.float64) for k in ("c.weight", "c.bias"))
    ref = conv_ref(cfg)(x, w, b)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    gy = rng.standard_normal(y.shape)
    gx = m.backward(gy.astype(np.float32))
    assert gx.dtype == np.float32 and m.grads["c.weight"].dtype == np.float32
    # the input gradient is the convolution of gy with the flipped, transposed weights
    R = cfg["kernel_size"]
    gref = conv_ref(dict(kernel_size=R, padding=R - 1 - cfg["padding"]))(gy, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    np.testing.assert_allclose(gx, gref, rtol=0, atol=2e-5 * np.abs(gref).max())


# PyTorch as an oracle -----------------------------------------------------------------------

def _torch_conv(torch, cfg, x, weight, bias):
    F = torch.nn.functional
    padding = cfg.get("padding", 0)
    if isinstance(padding, tuple) and len(padding) == 4:
        top, bottom, left, right = padding
        x = F.pad(x, (left, right, top, bottom))
        padding = 0
    return F.conv2d(x, weight, bias, stride=cfg.get("stride", 1), padding=padding,
                    dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv2d_output_shape_matches_torch(cfg, shape):
    torch = pytest.importorskip("torch")
    layer = Conv2d(**cfg)
    K, (R, S) = cfg["out_channels"], _pair(cfg["kernel_size"])
    w = torch.zeros(K, shape[1] // cfg.get("groups", 1), R, S, dtype=torch.float64)
    y = _torch_conv(torch, cfg, torch.zeros(shape, dtype=torch.float64), w, None)
    assert (shape[0], *layer.output_shape(shape[1:])) == tuple(y.shape)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("path", ["channel-major", "pixel-major", "winograd"])
@pytest.mark.parametrize("i", [0, 1, 3, 5, 7, 10])
def test_conv2d_values_and_gradients_match_torch(i, path, monkeypatch):
    torch = pytest.importorskip("torch")
    cfg, shape = CONFIGS[i]
    if path == "pixel-major":
        if cfg.get("groups", 1) != 1:
            pytest.skip("grouped convolutions take the channel-major path")
        monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "pixel")
    if path == "winograd":
        if (cfg, shape) not in WINOGRAD:
            pytest.skip("only 3x3 stride-1 convolutions take the Winograd path")
        _force_winograd(monkeypatch)
    g = nc.Graph()
    g.conv2d(g.input(shape[1:]), name="c", **cfg)
    m = nc.Model(g, seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    y = m.forward(x, training=True)
    gy = rng.standard_normal(y.shape)
    gx = m.backward(gy)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(m.params["c.weight"], requires_grad=True)
    bt = torch.tensor(m.params["c.bias"], requires_grad=True) if "c.bias" in m.params else None
    yt = _torch_conv(torch, cfg, xt, wt, bt)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.grads["c.weight"], wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    if bt is not None:
        np.testing.assert_allclose(m.grads["c.bias"], bt.grad.numpy(), rtol=1e-12, atol=1e-12)


# CUDA (simulator or GPU): tiny shapes, the same kinds of config; the 1x1 case has a batch of
# 2 and enough pixels for the weight gradient's reduction to be cut into two slices.

CUDA_CONFIGS = [
    (dict(out_channels=3, kernel_size=3, stride=2, padding=1), (1, 2, 5, 4)),
    (dict(out_channels=4, kernel_size=(3, 2), padding=(1, 0, 2, 1), dilation=(2, 1), groups=2, bias=False),
     (1, 2, 5, 4)),
    (dict(out_channels=4, kernel_size=3, padding="same", groups=2), (1, 2, 3, 4)),
    (dict(out_channels=3, kernel_size=1), (2, 2, 3, 3)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("cfg,shape", CUDA_CONFIGS, ids=[f"{c}@{s}" for c, s in CUDA_CONFIGS])
def test_conv2d_cuda(cfg, shape):
    check_layer(Conv2d(**cfg), [shape], conv_ref(cfg), cuda=True, threads=False)


@pytest.mark.cuda
def test_conv2d_cuda_with_the_gpu_tile(monkeypatch):
    # A GPU runs 16x16 tiles and 256-thread bias sums; the simulator defaults to smaller ones,
    # so here it runs the GPU's, on a shape whose every product spans two tiles (20 output
    # pixels; reductions of 18, 27 and 20 terms).
    from numbacnn.device import is_simulator
    from numbacnn.layers import conv2d_cuda

    if is_simulator():
        monkeypatch.setattr(conv2d_cuda, "TILE", conv2d_cuda.GPU_TILE)
        monkeypatch.setattr(conv2d_cuda, "BIAS_THREADS", conv2d_cuda.GPU_BIAS_THREADS)
    assert (conv2d_cuda.TILE, conv2d_cuda.BIAS_THREADS) == (16, 256)
    cfg, shape = dict(out_channels=3, kernel_size=3, padding=1), (1, 2, 5, 4)
    check_layer(Conv2d(**cfg), [shape], conv_ref(cfg), cuda=True, threads=False)
