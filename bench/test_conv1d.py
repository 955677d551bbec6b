"""conv1d: forward + backward (weight, bias and input gradients) on a text-CNN shape.

Peers in one group: numbacnn (the layer driven through its Ctx, as the executor drives it) and
PyTorch (``nn.Conv1d``). numbacnn's output and gradients are checked against PyTorch's once,
outside the timer, which is also the warm-up that compiles the kernels. The issue's target:
at least 0.8x PyTorch (bench/report.py prints it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import numbacnn as nc
from _peers import SMOKE_BATCH, LayerRun, check_same

# (N, C, L, K, kernel, padding): a text CNN's convolution over 256 token embeddings of 128 dims.
SHAPES = [(32, 128, 256, 128, 5, 2)]


def _id(shape: tuple[int, ...]) -> str:
    N, C, L, K, k, p = shape
    return f"N{N}-{C}x{L}-K{K}-k{k}-p{p}"


def _data(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    N, C, L, K, k, p = shape
    rng = np.random.default_rng(0)
    bound = 1.0 / np.sqrt(C * k)
    return (rng.standard_normal((N, C, L), dtype=np.float32),
            rng.uniform(-bound, bound, (K, C, k)).astype(np.float32),
            rng.uniform(-bound, bound, (K,)).astype(np.float32),
            rng.standard_normal((N, K, L + 2 * p - k + 1), dtype=np.float32))


def _torch_step(shape: tuple[int, ...], data: tuple[np.ndarray, ...]) -> Any:
    torch = pytest.importorskip("torch")
    x, w, b, gy = data
    _, C, _, K, k, p = shape
    conv = torch.nn.Conv1d(C, K, k, padding=p)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    xt, gyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(gy)

    def step() -> tuple:
        conv.zero_grad()
        xt.grad = None
        y = conv(xt)
        y.backward(gyt)
        return y, xt.grad, conv.weight.grad, conv.bias.grad

    return step


def _numbacnn_step(shape: tuple[int, ...], data: tuple[np.ndarray, ...]) -> Any:
    x, w, b, gy = data
    _, _, _, K, k, p = shape
    run = LayerRun(nc.get_layer("conv1d")(out_channels=K, kernel_size=k, padding=p), x, {"weight": w, "bias": b}, gy)

    def step() -> tuple:
        y, gx = run.step()
        return y, gx, run.ctx.grads["weight"], run.ctx.grads["bias"]

    return step


@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("shape", [pytest.param(s, id=_id(s)) for s in SHAPES])
def test_conv1d_forward_backward_cpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    run_shape = (min(shape[0], SMOKE_BATCH), *shape[1:]) if smoke else shape
    data = _data(run_shape)
    fn = (_numbacnn_step if peer == "numbacnn" else _torch_step)(run_shape, data)
    got = fn()  # warm-up; the gradients are fresh on this first call
    if peer == "numbacnn":
        want = _torch_step(run_shape, data)()
        for name, a, t in zip(("y", "gx", "gw", "gb"), got, want):
            check_same(f"conv1d step {name}", a, t.detach().numpy())
    N, C, L, K, k, p = run_shape
    record("conv1d forward+backward", "cpu", _id(shape), peer, N, 3 * 2 * N * K * (L + 2 * p - k + 1) * C * k)
    benchmark(fn)
