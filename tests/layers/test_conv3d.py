"""conv3d: vol2col + GEMM on the CPU, direct per-element kernels on CUDA, checked against naive
loops, PyTorch, fenced random geometries, the simulator and the messages."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

Conv3d = nc.get_layer("conv3d")


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _pads(padding, kernel, dilation):
    """(front, back, top, bottom, left, right), worked out here independently of the layer."""
    if padding == "valid":
        return (0,) * 6
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(v for t in totals for v in (t // 2, t - t // 2))
    if isinstance(padding, tuple) and len(padding) == 6:
        return padding
    return tuple(v for p in _triple(padding) for v in (p, p))


def conv3d_ref(cfg):
    """Naive NumPy conv3d: loops over output channel and position, a tensordot over the window;
    with ``gy``, the three gradients by the same loops (each window's contribution scattered)."""
    kernel, stride, dil = (_triple(cfg.get(k, d)) for k, d in (("kernel_size", 1), ("stride", 1), ("dilation", 1)))
    pads = _pads(cfg.get("padding", 0), kernel, dil)
    groups = cfg.get("groups", 1)

    def windows(x, K, Cg):
        N, C, *sizes = x.shape
        xp = np.zeros((N, C, *(m + pads[2 * i] + pads[2 * i + 1] for i, m in enumerate(sizes))))
        xp[:, :, pads[0]:pads[0] + sizes[0], pads[2]:pads[2] + sizes[1], pads[4]:pads[4] + sizes[2]] = x
        out = [(xp.shape[2 + i] - dil[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(3)]
        for k in range(K):
            c0 = k // (K // groups) * Cg
            for pos in np.ndindex(*out):
                sl = tuple(slice(o * s, o * s + d * (kk - 1) + 1, d) for o, s, d, kk in zip(pos, stride, dil, kernel))
                yield k, pos, (slice(None), slice(c0, c0 + Cg), *sl), xp, out

    def ref(x, weight, bias=None, gy=None):
        K, Cg = weight.shape[:2]
        y = gx = gw = None
        for k, pos, sl, xp, out in windows(x, K, Cg):
            if y is None:
                y, gxp, gw = np.zeros((x.shape[0], K, *out)), np.zeros_like(xp), np.zeros_like(weight)
            y[(slice(None), k, *pos)] = np.tensordot(xp[sl], weight[k], 4)
            if gy is not None:
                g = gy[(slice(None), k, *pos)]
                gw[k] += np.tensordot(g, xp[sl], 1)
                gxp[sl] += g[:, None, None, None, None] * weight[k]
        if bias is not None:
            y += bias[None, :, None, None, None]
        if gy is None:
            return y
        D, H, W = x.shape[2:]
        gx = gxp[:, :, pads[0]:pads[0] + D, pads[2]:pads[2] + H, pads[4]:pads[4] + W]
        return y, gx, gw, gy.sum((0, 2, 3, 4))

    return ref


# (constructor arguments, input shape): strides, paddings, dilation, groups, bias, odd sizes.
CONFIGS = [
    (dict(out_channels=3, kernel_size=3), (2, 2, 4, 5, 3)),
    (dict(out_channels=4, kernel_size=3, stride=2, padding=1), (2, 3, 5, 4, 6)),
    (dict(out_channels=2, kernel_size=(1, 3, 2), padding="same", dilation=(1, 2, 2)), (1, 2, 3, 5, 4)),
    (dict(out_channels=3, kernel_size=2, padding="same"), (2, 1, 3, 3, 4)),
    (dict(out_channels=2, kernel_size=(2, 1, 3), padding="valid", bias=False), (1, 3, 4, 3, 5)),
    (dict(out_channels=3, kernel_size=2, padding=(1, 0, 0, 2, 1, 1)), (2, 2, 3, 3, 2)),
    (dict(out_channels=4, kernel_size=3, padding=1, groups=2), (2, 4, 3, 4, 3)),
    (dict(out_channels=6, kernel_size=(3, 2, 2), stride=(1, 2, 3), groups=3), (1, 3, 4, 5, 7)),
    (dict(out_channels=2, kernel_size=2, stride=(2, 1, 1), padding=(0, 1, 2), dilation=(1, 2, 1)), (2, 2, 5, 4, 3)),
    (dict(out_channels=3, kernel_size=1), (2, 4, 2, 3, 3)),
    (dict(out_channels=2, kernel_size=1, stride=2, groups=2, bias=False), (1, 2, 3, 5, 4)),
    (dict(out_channels=2, kernel_size=3, padding=2), (1, 1, 1, 1, 1)),  # a single voxel, padding wider
]
IDS = [",".join(f"{k}={v}" for k, v in cfg.items()) + f"@{shape}" for cfg, shape in CONFIGS]


@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv3d_cpu(cfg, shape):
    check_layer(Conv3d(**cfg), [shape], conv3d_ref(cfg), cuda=False, threads=False, fd_points=8)


def test_conv3d_threads_and_bad_shapes():
    check_layer(Conv3d(out_channels=4, kernel_size=(3, 1, 2), groups=2, dilation=(1, 1, 2)), [(3, 4, 3, 2, 4)],
                conv3d_ref(dict(kernel_size=(3, 1, 2), groups=2, dilation=(1, 1, 2))), cuda=False,
                bad_shapes=[([(2, 3, 3, 3, 3)], "input has 3 channels, which groups=2 does not divide"),
                            ([(2, 4, 2, 3, 4)], "input 2x3x4 padded to 2x3x4 is smaller than the kernel's extent "
                                                "3x1x3 (kernel 3x1x2, dilation 1x1x2)"),
                            ([(2, 4, 3, 3)], "expected a (C, D, H, W) input, found shape (4, 3, 3)")])


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(out_channels=0, kernel_size=3), ValueError, "out_channels must be >= 1"),
    (dict(out_channels=2, kernel_size=(3, 3)), TypeError, "kernel_size must be an int or a triple"),
    (dict(out_channels=2, kernel_size=3, stride=(1, 0, 1)), ValueError, "stride must be >= 1"),
    (dict(out_channels=2, kernel_size=3, dilation=0), ValueError, "dilation must be >= 1"),
    (dict(out_channels=2, kernel_size=3, padding=-1), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding=(1, 2)), TypeError, "padding must be an int or a triple"),
    (dict(out_channels=2, kernel_size=3, padding=(0, 0, 1, 1, -1, 0)), ValueError, "padding must be >= 0"),
    (dict(out_channels=2, kernel_size=3, padding=(0, 0, 1, 1, 1.0, 0)), TypeError,
     "padding (begin, end per axis) must be ints"),
    (dict(out_channels=2, kernel_size=3, padding="full"), ValueError, "padding must be 'same', 'valid'"),
    (dict(out_channels=2, kernel_size=3, stride=(1, 2, 1), padding="same"), ValueError,
     "padding='same' needs stride 1 (as in PyTorch), found stride=(1, 2, 1)"),
    (dict(out_channels=3, kernel_size=3, groups=2), ValueError, "out_channels=3 is not divisible by groups=2"),
    (dict(out_channels=2, kernel_size=3, bias=None), TypeError, "bias must be True or False"),
])
def test_conv3d_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        Conv3d(**kwargs)


def test_conv3d_params_init_flops_and_free_sizes():
    g = nc.Graph()
    g.conv3d(g.input((4, None, 6, None)), out_channels=6, kernel_size=(1, 3, 2), padding=1, groups=2, name="c")
    m = nc.Model(g, seed=3, dtype="float64")
    w, b = m.params["c.weight"], m.params["c.bias"]
    assert w.shape == (6, 2, 1, 3, 2) and b.shape == (6,)
    bound = 1 / np.sqrt(2 * 3 * 2)  # PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and np.abs(b).max() <= bound
    assert m.output_shape == (6, None, 6, None)
    rng = np.random.default_rng(0)
    for D, W in ((2, 5), (4, 3)):
        x = rng.standard_normal((2, 4, D, 6, W))
        np.testing.assert_allclose(m.forward(x), conv3d_ref(dict(kernel_size=(1, 3, 2), padding=1, groups=2))(x, w, b),
                                   rtol=1e-12, atol=1e-12)
    g2 = nc.Graph()
    g2.conv3d(g2.input((4, 3, 6, 5)), out_channels=6, kernel_size=(1, 3, 2), padding=1, groups=2, bias=False)
    m2 = nc.Model(g2)
    assert m2.output_shape == (6, 5, 6, 6) and len(m2.params) == 1
    assert m2.flops() == 2 * 6 * 5 * 6 * 6 * 2 * 1 * 3 * 2


# Fenced random geometries: every array the CPU kernels touch sits inside a NaN-marked margin,
# so a read past an array shows as NaN and a write past one raises (every other one in
# column-matrix blocks of one output depth).
def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        groups = int(rng.choice([1, 1, 2]))
        kw = dict(out_channels=groups * int(rng.integers(1, 3)), groups=groups,
                  kernel_size=tuple(int(v) for v in rng.integers(1, 4, 3)),
                  stride=tuple(int(v) for v in rng.integers(1, 3, 3)),
                  padding=tuple(int(v) for v in rng.integers(0, 3, 6)),
                  dilation=tuple(int(v) for v in rng.integers(1, 3, 3)), bias=bool(rng.integers(0, 2)))
        shape = (int(rng.integers(1, 4)), groups * int(rng.integers(1, 3)), *(int(v) for v in rng.integers(1, 6, 3)))
        try:
            Conv3d(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(16, seed=13)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_conv3d_random_geometries_fenced(i, monkeypatch):
    from numbacnn.layers import conv3d_cpu

    kw, shape = GEOMETRIES[i]
    if i % 2:  # column-matrix blocks of one output depth plane: every block edge crossed
        monkeypatch.setattr(conv3d_cpu, "_BLOCK_ELEMENTS", 1)
    dtype = np.float32 if i % 4 == 3 else np.float64
    rng = np.random.default_rng(i)
    layer = Conv3d(**kw)
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    run = run_fenced(layer, [x], gy)
    p = {k: v.astype(np.float64) for k, v in run.params.items()}
    y, gx, gw, gb = conv3d_ref(kw)(x.astype(np.float64), p["weight"], p.get("bias"), gy=gy.astype(np.float64))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.y, y, err_msg=f"forward of {layer!r} on {shape}", **tol)
    np.testing.assert_allclose(run.gxs[0], gx, err_msg=f"input gradient of {layer!r} on {shape}", **tol)
    np.testing.assert_allclose(run.grads["weight"], gw, err_msg=f"weight gradient of {layer!r} on {shape}", **tol)
    if kw["bias"]:
        np.testing.assert_allclose(run.grads["bias"], gb, err_msg=f"bias gradient of {layer!r}", **tol)
    np.testing.assert_array_equal(run_fenced(layer, [x], None, training=False).y, run.y)


# PyTorch as an oracle -----------------------------------------------------------------------

def _torch_conv3d(torch, cfg, x, weight, bias):
    F = torch.nn.functional
    padding = cfg.get("padding", 0)
    if isinstance(padding, tuple) and len(padding) == 6:
        x = F.pad(x, (*padding[4:], *padding[2:4], *padding[:2]))
        padding = 0
    return F.conv3d(x, weight, bias, stride=cfg.get("stride", 1), padding=padding, dilation=cfg.get("dilation", 1),
                    groups=cfg.get("groups", 1))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("cfg,shape", CONFIGS, ids=IDS)
def test_conv3d_output_shape_matches_torch(cfg, shape):
    torch = pytest.importorskip("torch")
    w = torch.zeros(cfg["out_channels"], shape[1] // cfg.get("groups", 1), *_triple(cfg["kernel_size"]))
    y = _torch_conv3d(torch, cfg, torch.zeros(shape), w, None)
    assert (shape[0], *Conv3d(**cfg).output_shape(shape[1:])) == tuple(y.shape)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("i", [0, 1, 2, 3, 5, 7, 8, 10, 11])
def test_conv3d_values_and_gradients_match_torch(i, dtype):
    torch = pytest.importorskip("torch")
    cfg, shape = CONFIGS[i]
    g = nc.Graph()
    g.conv3d(g.input(shape[1:]), name="c", **cfg)
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
    yt = _torch_conv3d(torch, cfg, xt, wt, bt)
    yt.backward(torch.tensor(gy))
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.grads["c.weight"], wt.grad.numpy(), rtol=tol, atol=tol)
    if bt is not None:
        np.testing.assert_allclose(m.grads["c.bias"], bt.grad.numpy(), rtol=tol, atol=tol)


# CUDA (simulator or GPU): tiny shapes; check_layer compares with the CPU kernels too.
CUDA_CONFIGS = [
    (dict(out_channels=2, kernel_size=2, stride=(1, 2, 1), padding=(1, 0, 0, 1, 1, 0)), (1, 2, 3, 3, 2)),
    (dict(out_channels=4, kernel_size=(2, 1, 2), dilation=(1, 1, 2), groups=2, bias=False), (2, 2, 3, 2, 3)),
    (dict(out_channels=2, kernel_size=1), (2, 2, 1, 2, 3)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("cfg,shape", CUDA_CONFIGS, ids=[f"{c}@{s}" for c, s in CUDA_CONFIGS])
def test_conv3d_cuda(cfg, shape):
    check_layer(Conv3d(**cfg), [shape], conv3d_ref(cfg), cuda=True, threads=False, fd_points=6)


@pytest.mark.parametrize("padding", [(1, 0, 0, 2, 1, 1), (1, 0, 2), "same"])
def test_conv3d_onnx_round_trip(padding, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = nc.Graph()
    g.conv3d(g.input((2, 3, 4, 5)), out_channels=4, kernel_size=(2, 3, 2), padding=padding, groups=2, name="c")
    m = nc.Model(g, seed=2)
    nc.onnx.export(m, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 4, 5)).astype(np.float32)
    y = m.forward(x)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {g.inputs[0]: x})[0], y, rtol=1e-5, atol=1e-6)
    back = nc.onnx.load(tmp_path / "m.onnx")
    assert back.params["c.weight"].shape == (4, 1, 2, 3, 2)
    np.testing.assert_allclose(back.forward(x), y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("elements", [1, 2 * 48 * 6])
def test_conv3d_cpu_in_blocks_of_output_depths(elements, monkeypatch):
    # The CPU builds its column matrix a block of output depths at a time: one depth per
    # block, and two (the last block short: 5 depths), on a grouped, strided, padded case.
    from numbacnn.layers import conv3d_cpu

    cfg, shape = dict(out_channels=4, kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 1), groups=2), \
        (2, 4, 4, 3, 2)
    monkeypatch.setattr(conv3d_cpu, "_BLOCK_ELEMENTS", elements)
    rows, out = 4 * 12, Conv3d(**cfg).output_shape(shape[1:])
    assert out == (4, 5, 2, 3)
    assert conv3d_cpu.conv3d_scratch(shape, (4, 2, 2, 3, 2), (2, *out), 2)[0] == (2, rows * (elements // 288 or 1) * 6)
    check_layer(Conv3d(**cfg), [shape], conv3d_ref(cfg), cuda=False, fd_points=8)
