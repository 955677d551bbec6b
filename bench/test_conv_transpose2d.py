"""conv_transpose2d: forward, and forward + backward (weight, bias and input gradients), on a
decoder's upsampling shape: (16, 64, 16, 16) -> 32 channels, kernel 4, stride 2, padding 1.

Peers in one group per workload: numbacnn (the layer driven through its Ctx, as the executor
drives it) and PyTorch (``torch.nn.ConvTranspose2d``; inference mode for the forward). Each
peer's results are checked once, outside the timer (which also compiles numbacnn's kernels),
against per-tap NumPy products in float64. GPU variants (``-m gpu``) time numbacnn's CUDA
layer and PyTorch on CUDA, synchronising inside the call.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import numbacnn as nc
from _peers import SMOKE_BATCH, LayerRun, check_same

# (N, C, H, W, K, kernel, stride, padding)
SHAPES = [(16, 64, 16, 16, 32, 4, 2, 1)]


def _id(shape: tuple[int, ...]) -> str:
    N, C, H, W, K, k, s, p = shape
    return f"N{N}-{C}x{H}x{W}-K{K}-k{k}-s{s}-p{p}"


def _out(shape: tuple[int, ...]) -> int:
    _, _, H, _, _, k, s, p = shape
    return (H - 1) * s - 2 * p + k


def _data(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    N, C, H, W, K, k, _, _ = shape
    rng = np.random.default_rng(0)
    bound = 1.0 / np.sqrt(K * k * k)
    P = _out(shape)
    return (rng.standard_normal((N, C, H, W), dtype=np.float32),
            rng.uniform(-bound, bound, (C, K, k, k)).astype(np.float32),
            rng.uniform(-bound, bound, (K,)).astype(np.float32),
            rng.standard_normal((N, K, P, P), dtype=np.float32))


def _reference(shape: tuple[int, ...], data: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """y, gx, gw, gb in float64: each tap's product lands on a strided slice of the uncropped output."""
    x, w, b, gy = (a.astype(np.float64) for a in data)
    N, C, H, W, K, k, s, p = shape
    full = np.zeros((N, K, (H - 1) * s + k, (W - 1) * s + k))
    gyf = np.zeros_like(full)
    P = _out(shape)
    gyf[:, :, p:p + P, p:p + P] = gy
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for r in range(k):
        for t in range(k):
            rows, cols = slice(r, r + s * (H - 1) + 1, s), slice(t, t + s * (W - 1) + 1, s)
            full[:, :, rows, cols] += np.einsum("nchw,ck->nkhw", x, w[:, :, r, t])
            gx += np.einsum("nkhw,ck->nchw", gyf[:, :, rows, cols], w[:, :, r, t])
            gw[:, :, r, t] = np.einsum("nchw,nkhw->ck", x, gyf[:, :, rows, cols])
    y = full[:, :, p:p + P, p:p + P] + b[None, :, None, None]
    return y, gx, gw, gy.sum(axis=(0, 2, 3))


def _peer(peer: str, mode: str, shape: tuple[int, ...], data: tuple, device: str) -> Callable[[], Any]:
    """The timed call of ``peer``: "forward" returns y, "step" returns (y, gx, gw, gb)."""
    x, w, b, gy = data
    _, C, _, _, K, k, s, p = shape
    if peer == "numbacnn":
        if device not in nc.layer_info("conv_transpose2d")["devices"]:
            pytest.skip(f"conv_transpose2d has no {device} kernels in this build")
        layer = nc.get_layer("conv_transpose2d")(out_channels=K, kernel_size=k, stride=s, padding=p)
        run = LayerRun(layer, x, {"weight": w, "bias": b}, gy, device)
        if mode == "forward":
            return run.forward

        def step() -> tuple:
            y, gx = run.step()
            return y, gx, run.ctx.grads["weight"], run.ctx.grads["bias"]

        return step
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA")
    conv = torch.nn.ConvTranspose2d(C, K, k, s, p).to(device)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    xt, gyt = torch.from_numpy(x).to(device), torch.from_numpy(gy).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode == "forward":
        def forward() -> Any:
            with torch.inference_mode():
                y = conv(xt)
            sync()
            return y

        return forward
    xt.requires_grad_()

    def torch_step() -> tuple:
        conv.zero_grad()
        xt.grad = None
        y = conv(xt)
        y.backward(gyt)
        sync()
        return y, xt.grad, conv.weight.grad, conv.bias.grad

    return torch_step


def _bench(benchmark: Any, record: Any, smoke: bool, mode: str, device: str, shape: tuple[int, ...],
           peer: str) -> None:
    run_shape = (min(shape[0], SMOKE_BATCH), *shape[1:]) if smoke else shape
    data = _data(run_shape)
    fn = _peer(peer, mode, run_shape, data, device)
    got = fn()  # warm-up: compiles numbacnn's kernels, creates oneDNN primitives
    want = _reference(run_shape, data)
    for name, a, ref in zip(("y", "gx", "gw", "gb"), (got,) if mode == "forward" else got, want):
        check_same(f"conv_transpose2d {mode} {peer} {name}", a, ref)
    N, C, H, W, K, k, _, _ = run_shape
    flops = 2 * N * C * H * W * K * k * k * (1 if mode == "forward" else 3)
    record("conv_transpose2d forward" if mode == "forward" else "conv_transpose2d forward+backward", device,
           _id(shape), peer, N, flops)
    benchmark(fn)


PARAMS = [pytest.param(s, id=_id(s)) for s in SHAPES]


@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("shape", PARAMS)
def test_conv_transpose2d_forward_cpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "forward", "cpu", shape, peer)


@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("shape", PARAMS)
def test_conv_transpose2d_forward_backward_cpu(benchmark: Any, record: Any, smoke: bool, shape: tuple,
                                               peer: str) -> None:
    _bench(benchmark, record, smoke, "step", "cpu", shape, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("shape", PARAMS)
def test_conv_transpose2d_forward_gpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "forward", "cuda", shape, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("shape", PARAMS)
def test_conv_transpose2d_forward_backward_gpu(benchmark: Any, record: Any, smoke: bool, shape: tuple,
                                               peer: str) -> None:
    _bench(benchmark, record, smoke, "step", "cuda", shape, peer)
