"""conv1d: conv2d's kernels on (N, C, 1, L) views with a (K, C/groups, 1, kernel) weight view,
checked against naive loops, PyTorch, both CPU paths, the simulator and the messages."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

Conv1d = nc.get_layer("conv1d")
Conv2d = nc.get_layer("conv2d")


def cpu_path(layer, shape, dtype="float32"):
    """The CPU path conv2d_plan picks for an (N, C, L) input (conv2d's on N, C, 1, L)."""
    from numbacnn.layers import conv2d_cpu

    shape = (shape[0], shape[1], 1, shape[2])
    out = (shape[0], *layer._output_shape_2d(shape[1:]))
    return conv2d_cpu.conv2d_plan("c", shape, out, layer._geometry(), True, dtype).path


def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def _pads(padding, k, d):
    """(left, right), worked out here independently of the layer."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        t = d * (k - 1)
        return t // 2, t - t // 2
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return tuple(padding)
    return _one(padding), _one(padding)


def conv1d_ref(cfg):
    """Naive NumPy conv1d: loops over output channel and position, a dot over each window."""
    k, s, d = _one(cfg["kernel_size"]), _one(cfg.get("stride", 1)), _one(cfg.get("dilation", 1))
    pl, pr = _pads(cfg.get("padding", 0), k, d)
    groups = cfg.get("groups", 1)

    def ref(x, weight, bias=None):
        N, C, L = x.shape
        K, Cg = weight.shape[:2]
        xp = np.zeros((N, C, L + pl + pr))
        xp[:, :, pl:pl + L] = x
        out = (L + pl + pr - d * (k - 1) - 1) // s + 1
        y = np.zeros((N, K, out))
        for o in range(K):
            c0 = o // (K // groups) * Cg
            for i in range(out):
                win = xp[:, c0:c0 + Cg, i * s:i * s + d * (k - 1) + 1:d]
                y[:, o, i] = np.einsum("ncr,cr->n", win, weight[o])
            if bias is not None:
                y[:, o] += bias[o]
        return y

    return ref


# (constructor arguments, input shape): strides, paddings, dilation, groups, bias, odd sizes.
CONFIGS = [
    (dict(out_channels=4, kernel_size=3), (2, 3, 9)),
    (dict(out_channels=5, kernel_size=3, stride=2, padding=1), (2, 3, 10)),
    (dict(out_channels=3, kernel_size=3, padding="same", dilation=2), (2, 2, 8)),
    (dict(out_channels=3, kernel_size=4, padding="same"), (1, 2, 7)),
    (dict(out_channels=4, kernel_size=(2,), padding="valid"), (1, 3, 6)),
    (dict(out_channels=4, kernel_size=3, padding=(2, 1)), (2, 3, 5)),
    (dict(out_channels=6, kernel_size=3, padding=1, groups=2), (2, 4, 7)),
    (dict(out_channels=6, kernel_size=3, stride=2, groups=3), (2, 3, 9)),
    (dict(out_channels=3, kernel_size=5, stride=3, padding=2, bias=False), (1, 5, 11)),
    (dict(out_channels=2, kernel_size=3, stride=(2,), padding=(2,), dilation=(2,)), (2, 2, 9)),
    (dict(out_channels=4, kernel_size=1), (2, 6, 5)),
    (dict(out_channels=3, kernel_size=1, stride=2, groups=3, bias=False), (1, 3, 7)),
    (dict(out_channels=2, kernel_size=5, padding=3), (1, 2, 1)),  # length 1, padding wider than it
]
IDS = [",".join(f"{k}={v}" for k, v in cfg.items()) + f"@{shape}" for cfg, shape in CONFIGS]


@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv1d_cpu(cfg, shape):
    check_layer(Conv1d(**cfg), [shape], conv1d_ref(cfg), cuda=False, threads=False)


# conv2d's pixel-major CPU path takes ungrouped stride-1 convolutions with C * kernel >= 16;
# the small configs above mostly take the channel-major one, so every ungrouped one is forced
# down the pixel-major one here.
PIXEL_MAJOR = [(cfg, shape) for cfg, shape in CONFIGS if cfg.get("groups", 1) == 1 and cfg["kernel_size"] != 1]


def _force_pixel_major(monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "pixel")


@pytest.mark.parametrize("cfg,shape", PIXEL_MAJOR, ids=[IDS[CONFIGS.index(c)] for c in PIXEL_MAJOR])
def test_conv1d_cpu_pixel_major(cfg, shape, monkeypatch):
    _force_pixel_major(monkeypatch)
    layer = Conv1d(**cfg)
    assert cpu_path(layer, shape) == "pixel"
    check_layer(layer, [shape], conv1d_ref(cfg), cuda=False, threads=False)


def test_conv1d_takes_the_channel_major_path_on_wide_inputs():
    # A one-row convolution stays channel-major (conv2d_plan.cpu_path: it measured faster
    # than the pixel-major path conv2d takes for runs of C * kernel >= 16 values); with enough
    # channels a 5-tap one goes to F(4, 5) (test_conv1d_winograd), other kernels stay here.
    cfg, shape = dict(out_channels=5, kernel_size=5, padding=2), (2, 4, 12)
    layer = Conv1d(**cfg)
    assert cpu_path(layer, (2, 4, 12)) == "im2col" and cpu_path(layer, (2, 3, 12)) == "im2col"
    assert cpu_path(Conv1d(out_channels=32, kernel_size=3, padding=1), (2, 32, 300)) == "im2col"
    # the same window over two rows is pixel-major, as conv2d's (its backward at least: few
    # channels train on shifted taps first, conv2d_plan.SHIFT_TRAIN_MAX_PRODUCT)
    from numbacnn.layers import conv2d_cpu

    two_rows = nc.get_layer("conv2d")(out_channels=5, kernel_size=(1, 5), padding=(0, 2))
    out = (2, *two_rows._output_shape_2d((4, 2, 12)))
    plan = conv2d_cpu.conv2d_plan("c", (2, 4, 2, 12), out, two_rows._geometry(), True, "float32")
    assert "pixel" in (plan.path, plan.backward_path)
    check_layer(layer, [shape], conv1d_ref(cfg), cuda=False)


def test_conv1d_bad_shapes():
    check_layer(Conv1d(out_channels=4, kernel_size=3, groups=2, dilation=2), [(2, 4, 7)], cuda=False,
                threads=False,
                bad_shapes=[([(2, 3, 7)], "input has 3 channels, which groups=2 does not divide"),
                            ([(2, 4, 4)], "input of length 4 padded to 4 is shorter than the kernel's extent 5 "
                                          "(kernel 3, dilation 2)"),
                            ([(2, 4, 5, 5)], "expected a (C, L) input, found shape (4, 5, 5)")])


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(out_channels=0, kernel_size=3), ValueError, "out_channels must be >= 1"),
    (dict(out_channels=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(out_channels=2, kernel_size=(3, 3)), TypeError, "kernel_size must be an int or a 1-tuple"),
    (dict(out_channels=2, kernel_size=3, stride=0), ValueError, "stride must be >= 1"),
    (dict(out_channels=2, kernel_size=3, dilation=(1, 2)), TypeError, "dilation must be an int or a 1-tuple"),
    (dict(out_channels=2, kernel_size=3, padding=-1), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding=(1, -1)), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding=(1, 2, 3)), TypeError, "padding must be an int, a 1-tuple, "
                                                                         "(left, right)"),
    (dict(out_channels=2, kernel_size=3, padding="full"), ValueError, "padding must be 'same', 'valid'"),
    (dict(out_channels=2, kernel_size=3, stride=2, padding="same"), ValueError,
     "padding='same' needs stride 1 (as in PyTorch), found stride=2"),
    (dict(out_channels=3, kernel_size=3, groups=2), ValueError, "out_channels=3 is not divisible by groups=2"),
    (dict(out_channels=2, kernel_size=3, bias=1), TypeError, "bias must be True or False"),
])
def test_conv1d_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        Conv1d(**kwargs)


def test_conv1d_params_init_flops_and_config():
    g = nc.Graph()
    g.conv1d(g.input((6, 10)), out_channels=8, kernel_size=3, padding=1, groups=2, name="c")
    m = nc.Model(g, seed=3)
    w, b = m.params["c.weight"], m.params["c.bias"]
    assert w.shape == (8, 3, 3) and b.shape == (8,) and w.dtype == b.dtype == np.float32
    bound = 1 / np.sqrt(3 * 3)  # PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/groups * kernel
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and np.abs(b).max() <= bound
    assert m.output_shape == (8, 10)
    assert m.flops() == 2 * 8 * 10 * 3 * 3 + 8 * 10
    assert m.graph.nodes["c"].config == dict(out_channels=8, kernel_size=3, stride=1, padding=1, dilation=1,
                                             groups=2, bias=True)
    g2 = nc.Graph()
    g2.conv1d(g2.input((6, 10)), out_channels=8, kernel_size=3, bias=False, name="c")
    assert set(nc.Model(g2).params) == {"c.weight"}


def test_conv1d_free_length_and_save_load(tmp_path):
    g = nc.Graph()
    g.conv1d(g.input((3, None)), out_channels=4, kernel_size=3, stride=2, padding=1, name="c")
    m = nc.Model(g, seed=0, dtype="float64")
    assert m.output_shape == (4, None)
    rng = np.random.default_rng(0)
    for L in (5, 12):
        x = rng.standard_normal((2, 3, L))
        y = m.forward(x)
        np.testing.assert_allclose(y, conv1d_ref(dict(kernel_size=3, stride=2, padding=1))(
            x, m.params["c.weight"], m.params["c.bias"]), rtol=1e-12, atol=1e-12)
    m.save(tmp_path / "m.npz")
    back = nc.Model.load(tmp_path / "m.npz")
    assert back.params["c.weight"].shape == (4, 3, 3)
    np.testing.assert_array_equal(back.forward(x.astype(back.dtype)), m.forward(x).astype(back.dtype))


# PyTorch as an oracle -----------------------------------------------------------------------

def _torch_conv1d(torch, cfg, x, weight, bias):
    F = torch.nn.functional
    padding = cfg.get("padding", 0)
    if isinstance(padding, tuple) and len(padding) == 2:
        x = F.pad(x, padding)
        padding = 0
    return F.conv1d(x, weight, bias, stride=cfg.get("stride", 1), padding=padding, dilation=cfg.get("dilation", 1),
                    groups=cfg.get("groups", 1))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv1d_output_shape_matches_torch(cfg, shape):
    torch = pytest.importorskip("torch")
    w = torch.zeros(cfg["out_channels"], shape[1] // cfg.get("groups", 1), _one(cfg["kernel_size"]))
    y = _torch_conv1d(torch, cfg, torch.zeros(shape), w, None)
    assert (shape[0], *Conv1d(**cfg).output_shape(shape[1:])) == tuple(y.shape)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", ["channel-major", "pixel-major"])
@pytest.mark.parametrize("i", [0, 1, 3, 5, 6, 8, 9, 12])
def test_conv1d_values_and_gradients_match_torch(i, path, dtype, monkeypatch):
    torch = pytest.importorskip("torch")
    cfg, shape = CONFIGS[i]
    if path == "pixel-major":
        if cfg.get("groups", 1) != 1:
            pytest.skip("grouped convolutions take the channel-major path")
        _force_pixel_major(monkeypatch)
    g = nc.Graph()
    g.conv1d(g.input(shape[1:]), name="c", **cfg)
    m = nc.Model(g, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    y = m.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = m.backward(gy)
    assert y.dtype == gx.dtype == m.grads["c.weight"].dtype == np.dtype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(m.params["c.weight"], requires_grad=True)
    bt = torch.tensor(m.params["c.bias"], requires_grad=True) if "c.bias" in m.params else None
    yt = _torch_conv1d(torch, cfg, xt, wt, bt)
    yt.backward(torch.tensor(gy))
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.grads["c.weight"], wt.grad.numpy(), rtol=tol, atol=tol)
    if bt is not None:
        np.testing.assert_allclose(m.grads["c.bias"], bt.grad.numpy(), rtol=tol, atol=tol)


# CUDA (simulator or GPU): tiny shapes.
CUDA_CONFIGS = [
    (dict(out_channels=3, kernel_size=3, stride=2, padding=1), (1, 2, 7)),
    (dict(out_channels=4, kernel_size=2, padding=(2, 1), dilation=2, groups=2, bias=False), (2, 2, 5)),
    (dict(out_channels=3, kernel_size=1), (2, 2, 4)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("cfg,shape", CUDA_CONFIGS, ids=[f"{c}@{s}" for c, s in CUDA_CONFIGS])
def test_conv1d_cuda(cfg, shape):
    check_layer(Conv1d(**cfg), [shape], conv1d_ref(cfg), cuda=True, threads=False)


@pytest.mark.parametrize("padding", [(2, 1), (0, 3), 2, "same"])
def test_conv1d_onnx_round_trip_keeps_uneven_padding(padding, tmp_path):
    # (left, right) padding is conv2d's (top, bottom, left, right) in 1-D: ONNX pads [left, right].
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = nc.Graph()
    g.conv1d(g.input((3, 9)), out_channels=4, kernel_size=4, padding=padding, name="c")
    m = nc.Model(g, seed=2)
    nc.onnx.export(m, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 9)).astype(np.float32)
    y = m.forward(x)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {g.inputs[0]: x})[0], y, rtol=1e-5, atol=1e-6)
    back = nc.onnx.load(tmp_path / "m.onnx")
    assert back.params["c.weight"].shape == (4, 3, 4)
    np.testing.assert_allclose(back.forward(x), y, rtol=1e-6, atol=1e-7)
