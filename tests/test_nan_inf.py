"""NaN and Inf behave as in PyTorch: every built-in layer and plugin layer, forward and backward,
float32 and float64, on inputs and output gradients holding NaN, +Inf and -Inf.

"The same" means NaN at the same positions, the same infinities with the same sign, and the
finite values close. A failure names the layer, the array and the positions that differ.
The CUDA-marked variant runs the CUDA kernels (the simulator without a GPU) on the same cases.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

import numbacnn as nc

torch = pytest.importorskip("torch")
F = torch.nn.functional


class Case(NamedTuple):
    layer: str
    config: dict[str, Any]
    shapes: list[tuple[int, ...]]
    torch_fn: Callable[..., Any] | None  # (inputs, params and buffers by short name, training) -> output
    training: bool = True
    winograd: bool = False  # force conv2d's Winograd path on this small shape


def _conv(cfg: dict[str, Any], op: Callable[..., Any] = F.conv2d) -> Callable[..., Any]:
    def fn(xs, p, training):
        return op(xs[0], p["weight"], p.get("bias"), stride=cfg.get("stride", 1),
                        padding=cfg.get("padding", 0), dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1))
    return fn


def _conv_transpose(cfg: dict[str, Any]) -> Callable[..., Any]:
    def fn(xs, p, training):
        return F.conv_transpose2d(xs[0], p["weight"], p.get("bias"), stride=cfg.get("stride", 1),
                                  padding=cfg.get("padding", 0), output_padding=cfg.get("output_padding", 0),
                                  groups=cfg.get("groups", 1), dilation=cfg.get("dilation", 1))
    return fn


def _batch_norm(xs, p, training):
    return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p["weight"], p["bias"], training, 0.1, 1e-5)


def _localconv(xs, p, training):
    # Keras' LocallyConnected2D as PyTorch would write it: unfold, then one product per position.
    w, b = p["weight"], p["bias"]
    P, Q, K = w.shape[:3]
    cols = F.unfold(xs[0], w.shape[4:], padding=1)  # (N, C*R*S, P*Q)
    y = torch.einsum("lkj,njl->nkl", w.reshape(P * Q, K, -1), cols)
    return y.reshape(-1, K, P, Q) + b


def _spp(xs, p, training):
    return torch.cat([F.adaptive_max_pool2d(xs[0], level).flatten(1) for level in (1, 2, 3)], dim=1)


def _lp_pool_inf(F: Any, x: Any, kernel: int, stride: int) -> Any:
    # PyTorch 2.12 and later define p = inf as the window's max of |x| (lp_pool2d calls
    # max_pool2d(x.abs())), as numbacnn does; 2.11 computed sum(x^inf)^(1/inf) = 1 or NaN
    # everywhere (seen on a GPU machine's PyTorch 2.11). The oracle is the current definition.
    return F.max_pool2d(x.abs(), kernel, stride)


def _per_element(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on one element at a time: PyTorch's scalar CPU path, whose NaN and Inf rules its
    CUDA kernels share. Its SIMD CPU path breaks them in places (hardtanh's and relu6's
    gradient at a NaN input is 0, float64 elu's is NaN, float32 gelu(+inf) is NaN), and which
    elements take that path depends on the tensor's length; numbacnn follows the scalar rules."""
    def apply(xs, p, training):
        return torch.stack([fn(v.reshape(1)) for v in xs[0].reshape(-1)]).reshape(xs[0].shape)
    return apply


CASES: dict[str, Case] = {
    "adaptive_avg_pool2d": Case("adaptive_avg_pool2d", dict(output_size=(3, 2)), [(2, 2, 7, 5)],
                                lambda xs, p, t: F.adaptive_avg_pool2d(xs[0], (3, 2))),
    "adaptive_max_pool2d": Case("adaptive_max_pool2d", dict(output_size=(3, 4)), [(2, 2, 7, 5)],
                                lambda xs, p, t: F.adaptive_max_pool2d(xs[0], (3, 4))),
    "add": Case("add", {}, [(2, 3, 4), (2, 3, 4)], lambda xs, p, t: xs[0] + xs[1]),
    "avg_pool2d": Case("avg_pool2d", dict(kernel_size=3, stride=2, padding=1), [(2, 2, 6, 5)],
                       lambda xs, p, t: F.avg_pool2d(xs[0], 3, 2, 1)),
    "avg_pool2d-exclude-pad": Case("avg_pool2d", dict(kernel_size=2, stride=1, padding=1, count_include_pad=False),
                                   [(2, 2, 4, 5)],
                                   lambda xs, p, t: F.avg_pool2d(xs[0], 2, 1, 1, count_include_pad=False)),
    "batch_norm1d-train": Case("batch_norm1d", {}, [(4, 3)], _batch_norm),
    "batch_norm1d-sequence-train": Case("batch_norm1d", {}, [(3, 2, 4)], _batch_norm),
    "batch_norm1d-sequence-eval": Case("batch_norm1d", {}, [(3, 2, 4)], _batch_norm, training=False),
    "batch_norm2d-train": Case("batch_norm2d", {}, [(3, 2, 3, 3)], _batch_norm),
    "batch_norm2d-eval": Case("batch_norm2d", {}, [(3, 2, 3, 3)], _batch_norm, training=False),
    "batch_norm3d-train": Case("batch_norm3d", {}, [(2, 2, 2, 3, 2)], _batch_norm),
    "batch_norm3d-eval": Case("batch_norm3d", {}, [(2, 2, 2, 3, 2)], _batch_norm, training=False),
    "concat": Case("concat", {}, [(2, 2, 3, 3), (2, 1, 3, 3)], lambda xs, p, t: torch.cat(xs, 1)),
    "conv1d-channel-major": Case("conv1d", dict(out_channels=4, kernel_size=3, stride=2, padding=1, groups=2),
                                 [(2, 2, 9)], _conv(dict(stride=2, padding=1, groups=2), F.conv1d)),
    "conv1d-pixel-major": Case("conv1d", dict(out_channels=3, kernel_size=3, padding=(2, 1)), [(2, 6, 7)],
                               lambda xs, p, t: F.conv1d(F.pad(xs[0], (2, 1)), p["weight"], p.get("bias"))),
    "conv1d-winograd": Case("conv1d", dict(out_channels=3, kernel_size=5, padding=(2, 3)), [(2, 2, 9)],
                            lambda xs, p, t: F.conv1d(F.pad(xs[0], (2, 3)), p["weight"], p.get("bias")),
                            winograd=True),
    "conv3d": Case("conv3d", dict(out_channels=4, kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=1, groups=2),
                   [(2, 2, 3, 5, 4)], _conv(dict(stride=(1, 2, 1), padding=1, groups=2), F.conv3d)),
    "conv3d-dilated-no-bias": Case("conv3d", dict(out_channels=2, kernel_size=2, dilation=(2, 1, 1), bias=False),
                                   [(1, 3, 4, 3, 3)], _conv(dict(dilation=(2, 1, 1)), F.conv3d)),
    "conv2d-channel-major": Case("conv2d", dict(out_channels=3, kernel_size=3, stride=2, padding=1), [(2, 2, 7, 6)],
                                 _conv(dict(stride=2, padding=1))),
    "conv2d-grouped": Case("conv2d", dict(out_channels=4, kernel_size=3, padding=1, groups=2), [(2, 2, 5, 5)],
                           _conv(dict(padding=1, groups=2))),
    "conv2d-1x1": Case("conv2d", dict(out_channels=3, kernel_size=1), [(2, 4, 3, 3)], _conv({})),
    "conv2d-pixel-major": Case("conv2d", dict(out_channels=3, kernel_size=3, padding=1), [(2, 6, 6, 5)],
                               _conv(dict(padding=1))),
    "conv2d-winograd": Case("conv2d", dict(out_channels=16, kernel_size=3, padding=1), [(2, 16, 9, 6)],
                            _conv(dict(padding=1))),
    "conv2d-winograd-5x5": Case("conv2d", dict(out_channels=3, kernel_size=5, padding=2), [(1, 2, 9, 7)],
                                _conv(dict(padding=2)), winograd=True),
    "conv_transpose2d": Case("conv_transpose2d", dict(out_channels=3, kernel_size=4, stride=2, padding=1),
                             [(2, 2, 3, 4)], _conv_transpose(dict(stride=2, padding=1))),
    "conv_transpose2d-grouped": Case(
        "conv_transpose2d", dict(out_channels=4, kernel_size=3, stride=3, padding=1, output_padding=2, groups=2,
                                 dilation=(1, 2)), [(2, 4, 3, 3)],
        _conv_transpose(dict(stride=3, padding=1, output_padding=2, groups=2, dilation=(1, 2)))),
    "dropout-train": Case("dropout", dict(p=0.5), [(4, 3, 4)], None),  # x * mask * scale, with our mask
    "dropout-eval": Case("dropout", dict(p=0.5), [(4, 3, 4)], lambda xs, p, t: F.dropout(xs[0], 0.5, False),
                         training=False),
    "flatten": Case("flatten", {}, [(2, 3, 2, 2)], lambda xs, p, t: xs[0].flatten(1)),
    "global_max_pool2d": Case("global_max_pool2d", {}, [(2, 3, 3, 4)],
                              lambda xs, p, t: F.adaptive_max_pool2d(xs[0], 1).flatten(1)),
    "global_avg_pool2d": Case("global_avg_pool2d", {}, [(2, 3, 3, 4)], lambda xs, p, t: xs[0].mean((2, 3))),
    "leaky_relu": Case("leaky_relu", dict(negative_slope=0.1), [(2, 3, 4)],
                       lambda xs, p, t: F.leaky_relu(xs[0], 0.1)),
    "leaky_relu-negative-slope": Case("leaky_relu", dict(negative_slope=-0.5), [(2, 3, 4)],
                                      lambda xs, p, t: F.leaky_relu(xs[0], -0.5)),
    "linear": Case("linear", dict(out_features=3), [(3, 5)], lambda xs, p, t: F.linear(xs[0], p["weight"], p["bias"])),
    "avg_pool1d": Case("avg_pool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), [(2, 3, 8)],
                       lambda xs, p, t: F.avg_pool1d(xs[0], 3, 2, 1, ceil_mode=True)),
    "avg_pool3d": Case("avg_pool3d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                       [(2, 2, 5, 4, 5)], lambda xs, p, t: F.avg_pool3d(xs[0], 3, 2, 1, count_include_pad=False)),
    "lp_pool2d": Case("lp_pool2d", dict(norm_type=2, kernel_size=3, stride=2, ceil_mode=True), [(2, 2, 6, 7)],
                      lambda xs, p, t: F.lp_pool2d(xs[0], 2, 3, 2, ceil_mode=True)),
    "lp_pool2d-p1": Case("lp_pool2d", dict(norm_type=1, kernel_size=2, stride=1), [(2, 2, 4, 5)],
                         lambda xs, p, t: F.lp_pool2d(xs[0], 1, 2, 1)),
    "lp_pool2d-inf": Case("lp_pool2d", dict(norm_type=float("inf"), kernel_size=2, stride=1), [(2, 2, 4, 5)],
                          lambda xs, p, t: _lp_pool_inf(F, xs[0], 2, 1)),
    "max_pool1d": Case("max_pool1d", dict(kernel_size=3, stride=2, padding=1), [(2, 3, 9)],
                       lambda xs, p, t: F.max_pool1d(xs[0], 3, 2, 1)),
    "max_pool3d": Case("max_pool3d", dict(kernel_size=2, stride=1), [(2, 2, 3, 4, 4)],
                       lambda xs, p, t: F.max_pool3d(xs[0], 2, 1)),
    "max_pool3d-2x2x2-ceil": Case("max_pool3d", dict(kernel_size=2, ceil_mode=True), [(2, 2, 3, 5, 4)],
                                  lambda xs, p, t: F.max_pool3d(xs[0], 2, ceil_mode=True)),
    "max_pool2d": Case("max_pool2d", dict(kernel_size=2), [(2, 2, 6, 6)], lambda xs, p, t: F.max_pool2d(xs[0], 2)),
    "max_pool2d-3x3-s1": Case("max_pool2d", dict(kernel_size=3, stride=1, padding=1), [(2, 2, 5, 6)],
                              lambda xs, p, t: F.max_pool2d(xs[0], 3, 1, 1)),
    "max_pool2d-3x3-s2": Case("max_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), [(2, 2, 6, 7)],
                              lambda xs, p, t: F.max_pool2d(xs[0], 3, 2, 1, ceil_mode=True)),
    "relu": Case("relu", {}, [(2, 3, 4)], lambda xs, p, t: F.relu(xs[0])),
    "relu6": Case("relu6", {}, [(2, 3, 4)], _per_element(F.relu6)),
    "hardtanh": Case("hardtanh", dict(min_val=-0.5, max_val=2.0), [(2, 3, 4)],
                     _per_element(lambda x: F.hardtanh(x, -0.5, 2.0))),
    "elu": Case("elu", {}, [(2, 3, 4)], _per_element(F.elu)),
    "elu-negative-alpha": Case("elu", dict(alpha=-0.5), [(2, 3, 4)], _per_element(lambda x: F.elu(x, -0.5))),
    "gelu": Case("gelu", {}, [(2, 3, 4)], _per_element(F.gelu)),
    "gelu-tanh": Case("gelu", dict(approximate="tanh"), [(2, 3, 4)],
                      _per_element(lambda x: F.gelu(x, approximate="tanh"))),
    "softmax": Case("softmax", dict(dim=-1), [(2, 3, 4)], lambda xs, p, t: F.softmax(xs[0], -1)),
    "softmax-channels": Case("softmax", dict(dim=1), [(2, 3, 4, 5)], lambda xs, p, t: F.softmax(xs[0], 1)),
    "log_softmax": Case("log_softmax", dict(dim=-1), [(2, 3, 4)], lambda xs, p, t: F.log_softmax(xs[0], -1)),
    "log_softmax-channels": Case("log_softmax", dict(dim=1), [(2, 3, 4, 5)],
                                 lambda xs, p, t: F.log_softmax(xs[0], 1)),
    "sigmoid": Case("sigmoid", {}, [(2, 3, 4)], lambda xs, p, t: torch.sigmoid(xs[0])),
    "tanh": Case("tanh", {}, [(2, 3, 4)], lambda xs, p, t: torch.tanh(xs[0])),
    "upsample-nearest": Case("upsample", dict(scale_factor=2), [(2, 2, 3, 4)],
                             lambda xs, p, t: F.interpolate(xs[0], scale_factor=2)),
    "upsample-nearest-1.5": Case("upsample", dict(scale_factor=1.5), [(2, 2, 3, 4)],
                                 lambda xs, p, t: F.interpolate(xs[0], scale_factor=1.5)),
    "upsample-bilinear": Case("upsample", dict(scale_factor=2, mode="bilinear"), [(2, 2, 3, 4)],
                              lambda xs, p, t: F.interpolate(xs[0], scale_factor=2, mode="bilinear")),
    "upsample-bilinear-align-corners": Case(
        "upsample", dict(size=(5, 7), mode="bilinear", align_corners=True), [(2, 2, 3, 4)],
        lambda xs, p, t: F.interpolate(xs[0], size=(5, 7), mode="bilinear", align_corners=True)),
    # rows kept: PyTorch still blends each row with itself at weight 0, so 0 * Inf is NaN there
    "upsample-bilinear-rows-kept": Case("upsample", dict(size=(3, 7), mode="bilinear"), [(2, 2, 3, 4)],
                                        lambda xs, p, t: F.interpolate(xs[0], size=(3, 7), mode="bilinear")),
    "swish": Case("swish", {}, [(2, 3, 4)], lambda xs, p, t: xs[0] * torch.sigmoid(p["beta"] * xs[0])),
    "localconv": Case("localconv", dict(out_channels=2, kernel_size=3, padding=1), [(2, 2, 4, 5)], _localconv),
    "spp": Case("spp", dict(levels=[1, 2, 3]), [(2, 2, 5, 4)], _spp),
}

# Where the special values go: a few spread positions of the first input (its first element,
# one a third of the way in, its last), or of the output gradient; "planes" (images and volumes
# only) fills whole planes with -inf and puts several NaNs in one window, for the max poolings.
POISONS = ["nan", "+inf", "-inf", "mixed", "gy-nan", "gy-inf", "planes"]


def _poisoned(shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal(shape)
    if kind == "planes":
        a[0, 0] = -np.inf  # windows of -inf alone: PyTorch picks their first element
        a[0, 1, 0, :3] = a[0, 1, 1, 1] = np.nan  # windows with two or three NaNs: the last wins
        a[-1, 0] = -np.inf
        a[-1, 0, 1, 1], a[-1, 0, 0, -1] = np.nan, np.inf
        return a
    flat = a.reshape(-1)
    at = [0, flat.size // 3, flat.size - 1]
    values = {"nan": [np.nan] * 3, "+inf": [np.inf] * 3, "-inf": [-np.inf] * 3, "mixed": [np.nan, np.inf, -np.inf],
              "gy-nan": [np.nan] * 3, "gy-inf": [np.inf, -np.inf, np.inf]}[kind]
    flat[at] = values
    return a


def differences(what: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> list[str]:
    """Where ``got`` and ``want`` differ in NaN positions, infinities (with sign) or finite values."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return [f"{what}: shape {got.shape}, PyTorch {want.shape}"]
    fin = np.isfinite(want)
    scale = max(1.0, float(np.abs(want[fin]).max())) if fin.any() else 1.0
    bad = (np.isnan(got) != np.isnan(want)) | (np.isinf(want) & (got != want)) | (np.isinf(got) & (got != want))
    with np.errstate(invalid="ignore"):
        bad |= fin & np.isfinite(got) & (np.abs(got - want) > atol * scale + rtol * np.abs(want))
    where = [tuple(int(i) for i in p) for p in np.argwhere(bad)]
    if not where:
        return []
    shown = ", ".join(f"{p} ours {float(got[p])!r} PyTorch {float(want[p])!r}" for p in where[:4])
    return [f"{what}: {len(where)} of {got.size} differ, e.g. {shown}"]


def _host(a: Any) -> np.ndarray:
    return np.array(a if isinstance(a, np.ndarray) else a.copy_to_host())


def _model(case: Case, dtype: str, device: str, monkeypatch: pytest.MonkeyPatch) -> nc.Model:
    if case.layer not in nc.layer_names():
        pytest.skip(f"plugin layer '{case.layer}' is not installed")
    if case.winograd:
        monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")  # read when the model's plan is made
    g = nc.Graph()
    ins = [g.input(s[1:], name=f"x{i}") for i, s in enumerate(case.shapes)]
    g.output(g.layer(case.layer, *ins, name="l", **case.config))
    m = nc.Model(g, seed=1, dtype=dtype)
    if "l.running_mean" in m.buffers:  # statistics other than the initial 0 and 1
        m.buffers["l.running_mean"][...] = np.linspace(-0.5, 0.5, m.buffers["l.running_mean"].size)
        m.buffers["l.running_var"][...] = np.linspace(0.5, 2.0, m.buffers["l.running_var"].size)
    return m.to(device)


def compare_with_torch(name: str, kind: str, dtype: str, device: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run case ``name`` poisoned as ``kind``; the differences from PyTorch (none: empty)."""
    case = CASES[name]
    rng = np.random.default_rng(zlib.crc32(f"{name} {kind}".encode()))
    m = _model(case, dtype, device, monkeypatch)
    xs = [(_poisoned(s, kind, rng) if i == 0 and not kind.startswith("gy") else rng.standard_normal(s))
          for i, s in enumerate(case.shapes)]
    xs = [x.astype(dtype) for x in xs]
    state = m.rng_state()
    before = {k: _host(v) for k, v in {**m.params, **m.buffers}.items()}
    y = _host(m.forward(*xs, training=case.training, grad=True))
    gy = (_poisoned(y.shape, kind, rng) if kind.startswith("gy") else rng.standard_normal(y.shape)).astype(dtype)
    gxs = m.backward(gy)
    gxs = [_host(g) for g in (gxs if isinstance(gxs, tuple) else (gxs,))]
    ours = {"output": y, **{f"grad of input {i}": g for i, g in enumerate(gxs)},
            **{f"grad of {k}": _host(v) for k, v in m.grads.items()},
            **{f"buffer {k}": _host(v) for k, v in m.buffers.items()}}

    tdt = getattr(torch, dtype)
    txs = [torch.tensor(x, dtype=tdt, requires_grad=True) for x in xs]
    tp = {k.split(".", 1)[1]: torch.tensor(v, dtype=tdt, requires_grad=k in m.params) for k, v in before.items()}
    if case.torch_fn is None:  # dropout in training: torch's formula, x * mask * scale, with our mask
        m.set_rng_state(state)
        keep = _host(m.forward(np.ones_like(xs[0]), training=True)) != 0
        yt = txs[0] * torch.tensor(keep.astype(dtype)) * (1 / (1 - case.config["p"]))
        yt.backward(torch.tensor(gy))
    else:
        # PyTorch's native kernels: its oneDNN float32 convolution skips taps on the padding
        # in the weight gradient, so a NaN in gy reaches fewer weights there than in its own
        # float64 (im2col) path; numbacnn follows the im2col one on every path and device.
        with torch.backends.mkldnn.flags(enabled=False):
            yt = case.torch_fn(txs, tp, case.training)
            yt.backward(torch.tensor(gy))
    want = {"output": yt.detach().numpy(), **{f"grad of input {i}": t.grad.numpy() for i, t in enumerate(txs)},
            **{f"grad of l.{k}": t.grad.numpy() for k, t in tp.items() if t.requires_grad},
            **{f"buffer l.{k}": t.detach().numpy() for k, t in tp.items() if not t.requires_grad}}
    rtol, atol = (1e-4, 1e-5) if dtype == "float32" else (1e-9, 1e-12)
    problems = [p for key in want for p in differences(key, ours[key], want[key], rtol, atol)]
    return [f"{name} ({kind}, {dtype}, {device}): {p}" for p in problems]


@pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")  # torch.backends.mkldnn.flags
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", POISONS)
@pytest.mark.parametrize("name", list(CASES))
def test_nan_inf_as_torch_cpu(name, kind, dtype, monkeypatch):
    if kind == "planes" and len(CASES[name].shapes[0]) < 4:
        pytest.skip("planes of -inf: images and volumes only")
    problems = compare_with_torch(name, kind, dtype, "cpu", monkeypatch)
    assert not problems, "\n".join(problems)


# The CUDA kernels on the same cases (the simulator without a GPU: tiny shapes, fewer kinds).
# conv2d (and conv1d on it) has one CUDA kernel set, whatever path the CPU would take: three
# configs suffice.
CUDA_CASES = [name for name in CASES if name not in ("conv1d-pixel-major", "conv1d-winograd", "conv2d-pixel-major",
                                                     "conv2d-winograd", "conv2d-winograd-5x5")]


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")  # torch.backends.mkldnn.flags
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator's NumPy scalars warn on NaN and Inf
@pytest.mark.parametrize("kind,dtype", [("mixed", "float32"), ("mixed", "float64"), ("gy-inf", "float32"),
                                        ("planes", "float32")])
@pytest.mark.parametrize("name", CUDA_CASES)
def test_nan_inf_as_torch_cuda(name, kind, dtype, monkeypatch):
    if kind == "planes" and len(CASES[name].shapes[0]) < 4:
        pytest.skip("planes of -inf: images and volumes only")
    problems = compare_with_torch(name, kind, dtype, "cuda", monkeypatch)
    assert not problems, "\n".join(problems)


def test_conv2d_winograd_only_for_finite_data(monkeypatch):
    # Finite data keeps the fast path (16 channels: the default thresholds take it); a NaN in
    # x sends the forward to an im2col path, and its backward follows. A NaN output from
    # finite x and w (here a NaN bias; elsewhere a bug reading unwritten memory) is no reason
    # to leave: it stays as the fast path made it, visible to the tests.
    case = CASES["conv2d-winograd"]
    m = _model(case, "float32", "cpu", monkeypatch)
    x = np.random.default_rng(0).standard_normal(case.shapes[0]).astype(np.float32)
    assert np.isfinite(m.forward(x, training=True)).all()
    assert m._executor.ctxs["l"].saved[1][0] == "winograd"
    m.params["l.bias"][5] = np.nan
    assert np.isnan(m.forward(x, training=True)[:, 5]).all()
    assert m._executor.ctxs["l"].saved[1][0] == "winograd"
    m.params["l.bias"][5] = 0
    x[1, 3, 4, 4] = np.nan
    assert np.isnan(m.forward(x, training=True)).sum() == 16 * 9  # every channel, the 3x3 around it
    assert m._executor.ctxs["l"].saved[1] == ("im2col",)  # what the backward is told ran


# Losses ---------------------------------------------------------------------------------------

LOGITS = {
    "nan": [(0, 1, np.nan)],
    "+inf": [(1, 2, np.inf)],  # on the label, and beside it
    "-inf": [(2, 3, -np.inf), (1, 0, -np.inf)],  # on the label, and beside it
    "row of -inf": [(3, k, -np.inf) for k in range(5)],
    "mixed": [(0, 0, np.nan), (1, 2, np.inf), (2, 3, -np.inf), (3, 1, np.inf), (3, 2, np.inf)],
}


def compare_loss_with_torch(loss: str, kind: str, dtype: str, device: str) -> list[str]:
    rng = np.random.default_rng(zlib.crc32(f"{loss} {kind}".encode()))
    x = rng.standard_normal((4, 5))
    labels = np.array([1, 2, 3, 0])
    for n, k, v in LOGITS[kind]:
        x[n, k] = v
    x = x.astype(dtype)
    target = rng.standard_normal(x.shape).astype(dtype)
    arg = labels if loss == "cross_entropy" else target
    if device == "cuda":
        from numba import cuda

        value, gx = getattr(nc.losses, loss)(cuda.to_device(x), arg)
    else:
        value, gx = getattr(nc.losses, loss)(x, arg)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.cross_entropy(xt, torch.tensor(labels)) if loss == "cross_entropy" else F.mse_loss(xt, torch.tensor(target))
    yt.backward()
    tol = (1e-5, 1e-6) if dtype == "float32" else (1e-10, 1e-12)
    problems = differences("loss", np.array(value), yt.detach().numpy(), *tol)
    problems += differences("gradient", _host(gx), xt.grad.numpy(), *tol)
    return [f"{loss} ({kind}, {dtype}, {device}): {p}" for p in problems]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(LOGITS))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_nan_inf_as_torch_cpu(loss, kind, dtype):
    problems = compare_loss_with_torch(loss, kind, dtype, "cpu")
    assert not problems, "\n".join(problems)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(LOGITS))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_nan_inf_as_torch_cuda(loss, kind, dtype):
    problems = compare_loss_with_torch(loss, kind, dtype, "cuda")
    assert not problems, "\n".join(problems)
