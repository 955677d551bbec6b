"""network3's two-conv net (``nc.zoo.network3()``, conv2_relu): a full training step at batch
10 and 64 (zero_grad, forward, cross-entropy, backward, SGD with momentum) against the same
net in PyTorch with the same weights; inference on CUDA at batch 256. Its CPU inference rows
(batch 1, 32 and 256, onnxruntime included) are test_models.py's, with the other zoo models.

numbacnn runs through its public API (``Model.forward`` takes and returns NumPy arrays), as
a user would drive it. The first call, outside the timer, compiles and checks that both
peers give the same logits. GPU variants (``-m gpu``) run the model on CUDA; the step ends
with the loss on the host, which synchronises.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import numbacnn as nc
from _peers import SMOKE_BATCH, check_same, torch_train_step, train_step
from _twin import torch_twin

WORKLOAD = "1x28x28"


def _data(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)


def _numbacnn(device: str) -> nc.Model:
    model = nc.zoo.network3(seed=0)
    if device != "cpu":
        missing = [n for n in ("conv2d", "max_pool2d", "relu", "linear", "flatten")
                   if device not in nc.layer_info(n)["devices"]]
        if missing:
            pytest.skip(f"no {device} kernels in this build for: {', '.join(missing)}")
        model.to(device)
    return model


def _torch(model: nc.Model, device: str) -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA")
    return torch, torch_twin(model).to(device)


def _train(peer: str, device: str, batch: int) -> tuple[Callable[[], Any], nc.Model]:
    x, labels = _data(batch)
    model = _numbacnn(device)
    if peer == "numbacnn":
        return train_step(model, nc.optim.SGD(model, lr=0.03, momentum=0.9), x, labels), model
    torch, net = _torch(model, device)
    step = torch_train_step(net, x, labels) if device == "cpu" else _torch_cuda_step(torch, net, x, labels)
    return step, model


def _torch_cuda_step(torch: Any, net: Any, x: np.ndarray, labels: np.ndarray) -> Callable[[], float]:
    # As numbacnn's Model does: the batch goes to the device inside the step.
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    net.train()

    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x).cuda()),
                                                 torch.from_numpy(labels).cuda())
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _bench_train(benchmark: Any, record: Any, smoke: bool, device: str, batch: int, peer: str) -> None:
    run_batch = min(batch, SMOKE_BATCH) if smoke else batch
    step, model = _train(peer, device, run_batch)
    loss = step()
    x, labels = _data(run_batch)
    want = nc.losses.cross_entropy(nc.zoo.network3(seed=0).forward(x, training=True), labels)[0]
    assert abs(loss - want) < 1e-4 * max(1.0, abs(want)), f"{peer}: first-step loss {loss}, expected {want}"
    record("network3 train step", device, f"{WORKLOAD} N{batch}", peer, run_batch, 3 * model.flops() * run_batch)
    benchmark(step)


def _bench_infer(benchmark: Any, record: Any, smoke: bool, device: str, batch: int, peer: str) -> None:
    run_batch = min(batch, SMOKE_BATCH) if smoke else batch
    x, _ = _data(run_batch)
    model = _numbacnn(device)
    if peer == "numbacnn":
        fn: Callable[[], Any] = lambda: model.forward(x)
    else:
        torch, net = _torch(model, device)
        net.eval()

        def fn() -> Any:
            with torch.inference_mode():
                return net(torch.from_numpy(x).to(device)).cpu()

    # The reference keeps every activation (grad=True): not the arena path being timed.
    want = nc.zoo.network3(seed=0).forward(x, training=False, grad=True)
    check_same(f"network3 inference {peer}", fn(), want)
    record("network3 inference", device, f"{WORKLOAD} N{batch}", peer, run_batch, model.flops() * run_batch)
    benchmark(fn)


PEERS = ["numbacnn", "torch"]


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("batch", [10, 64], ids=lambda n: f"N{n}")
def test_network3_train_step_cpu(benchmark: Any, record: Any, smoke: bool, batch: int, peer: str) -> None:
    _bench_train(benchmark, record, smoke, "cpu", batch, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("batch", [10, 64], ids=lambda n: f"N{n}")
def test_network3_train_step_gpu(benchmark: Any, record: Any, smoke: bool, batch: int, peer: str) -> None:
    _bench_train(benchmark, record, smoke, "cuda", batch, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("batch", [256], ids=lambda n: f"N{n}")
def test_network3_inference_gpu(benchmark: Any, record: Any, smoke: bool, batch: int, peer: str) -> None:
    _bench_infer(benchmark, record, smoke, "cuda", batch, peer)
