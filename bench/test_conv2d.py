"""conv2d: forward, and forward + backward (weight, bias and input gradients), per issue shape.

Peers in one group per workload: numbacnn (the layer driven through its Ctx, as the executor
drives it), PyTorch (``nn.Conv2d``; inference mode for the forward) and a naive NumPy
im2col + matmul. Each peer's output is checked against the naive NumPy result once, outside
the timer, which is also the warm-up that compiles numbacnn's kernels. GPU variants
(``-m gpu``) time numbacnn's CUDA layer and PyTorch on CUDA, synchronising inside the call.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import numbacnn as nc
from _peers import (CONV_SHAPES, SMOKE_BATCH, check_same, conv_data, conv_flops, conv_id, layer_call,
                    numbacnn_conv, numpy_conv_forward, numpy_conv_step, torch_conv_call)

CPU_PEERS = ["numbacnn", "torch", "numpy"]
GPU_PEERS = ["numbacnn", "torch"]


def _run_shape(shape: tuple[int, ...], smoke: bool) -> tuple[int, ...]:
    return (min(shape[0], SMOKE_BATCH), *shape[1:]) if smoke else shape


def _peer(peer: str, mode: str, shape: tuple[int, ...], data: tuple, device: str) -> Callable[[], Any]:
    """The timed call of ``peer``: "forward" returns y, "step" returns (y, gx, gw, gb)."""
    x, w, b, gy = data
    s, p = shape[6], shape[7]
    if peer == "numpy":
        if mode == "forward":
            return lambda: numpy_conv_forward(x, w, b, s, p)
        return lambda: numpy_conv_step(x, w, b, gy, s, p)
    if peer == "numbacnn":
        if device not in nc.layer_info("conv2d")["devices"]:
            pytest.skip(f"conv2d has no {device} kernels in this build")
        return layer_call(numbacnn_conv(shape, data, device), mode)
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA")
    return torch_conv_call("Conv2d", shape, data, device, mode)


def _bench(benchmark: Any, record: Any, smoke: bool, mode: str, device: str, shape: tuple[int, ...],
           peer: str) -> None:
    run_shape = _run_shape(shape, smoke)
    data = conv_data(run_shape)
    fn = _peer(peer, mode, run_shape, data, device)
    got = fn()  # warm-up: compiles numbacnn's kernels, creates oneDNN primitives
    if peer != "numpy":
        x, w, b, gy = data
        if mode == "forward":
            check_same(f"conv2d forward {peer}", got, numpy_conv_forward(x, w, b, shape[6], shape[7]))
        else:
            y, gw, gb, gx = numpy_conv_step(x, w, b, gy, shape[6], shape[7])
            for name, a, want in zip(("y", "gx", "gw", "gb"), got, (y, gx, gw, gb)):
                check_same(f"conv2d step {peer} {name}", a, want)
    flops = conv_flops(run_shape) * (1 if mode == "forward" else 3)
    record("conv2d forward" if mode == "forward" else "conv2d forward+backward", device, conv_id(shape), peer, run_shape[0], flops)
    benchmark(fn)


SHAPES = [pytest.param(s, id=conv_id(s)) for s in CONV_SHAPES]


@pytest.mark.parametrize("peer", CPU_PEERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_forward_cpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "forward", "cpu", shape, peer)


@pytest.mark.parametrize("peer", CPU_PEERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_forward_backward_cpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "step", "cpu", shape, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", GPU_PEERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_forward_gpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "forward", "cuda", shape, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", GPU_PEERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_forward_backward_gpu(benchmark: Any, record: Any, smoke: bool, shape: tuple, peer: str) -> None:
    _bench(benchmark, record, smoke, "step", "cuda", shape, peer)
