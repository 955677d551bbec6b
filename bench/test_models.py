"""Whole zoo models: a training step against PyTorch eager, inference against PyTorch and
onnxruntime, every engine on the same weights and the same ``THREADS`` threads.

Models: ``lenet5`` and ``network3`` (1x28x28), ``vgg_small``, ``googlenet_mini`` and
``resnet_bottleneck`` (3x32x32), each built by ``nc.zoo.build(name, seed=0)``. The PyTorch
peer is ``_twin.torch_twin(model)``: the same graph walked node by node, numbacnn's weights
and batch-norm statistics copied in. The onnxruntime peer runs the file ``nc.onnx.export``
writes from the same model (one session, ``THREADS`` intra-op threads, sequential).

- ``<model> train step``, batch ``TRAIN_BATCH``: zero_grad, forward, cross-entropy, backward,
  SGD (lr 0.03, momentum 0.9), the loss returned as a Python float by both engines.
  Before timing, the two engines' loss and every parameter gradient of one training-mode
  step are checked equal on the model with its dropouts at p = 0 (dropout masks are random
  and differ between engines; the timed models keep their dropout).
- ``<model> inference N1/N32/N256``: ``Model.forward`` on a NumPy batch (host copies
  included, as a user pays them), PyTorch under ``inference_mode``, ``InferenceSession.run``;
  every peer's logits are checked against another engine's first.

Under ``--benchmark-disable`` (CI smoke) batches become ``SMOKE_BATCH``, batch 1 stays 1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import numbacnn as nc
from _peers import SMOKE_BATCH, THREADS, check_same, torch_train_step, train_step
from _twin import torch_twin, without_dropout
from _zoo import INFER_BATCHES, MODELS, TRAIN_BATCH, build, data, workload


def check_training_agrees(name: str, model: nc.Model, x: np.ndarray, labels: np.ndarray) -> None:
    """One training-mode forward and backward in both engines: same loss, same gradients."""
    import torch

    model = without_dropout(model)
    net = torch_twin(model).train()
    model.zero_grad()
    loss, gy = nc.losses.cross_entropy(model.forward(x, training=True), labels)
    model.backward(gy, input_grad=False)
    want = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(labels.astype(np.int64)))
    want.backward()
    if abs(loss - want.item()) > 1e-4 * max(1.0, abs(want.item())):
        raise AssertionError(f"{name} train step: loss {loss} in numbacnn, {want.item()} in PyTorch")
    grads = dict(net.named_parameters())
    for key, value in model.grads.items():
        node, _, what = key.rpartition(".")
        # Relative L2, loose: batch-norm over a batch of 2 (the smoke batch), 29 layers deep,
        # amplifies float32 rounding to ~1.3e-2 on resnet_bottleneck's bn2 weight; in float64
        # the two engines agree to ~1e-13, and a wrong layer is off by O(1).
        check_same(f"{name} gradient {key}", value, grads[f"layers.{node.replace('.', '__')}.{what}"].grad,
                   l2=5e-2)


@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("name", MODELS)
def test_model_train_step_cpu(benchmark: Any, record: Any, smoke: bool, name: str, peer: str) -> None:
    pytest.importorskip("torch")
    batch = SMOKE_BATCH if smoke else TRAIN_BATCH
    model = build(name)
    x, labels = data(model, batch)
    if peer == "numbacnn":
        check_training_agrees(name, model, x, labels)
        step = train_step(model, nc.optim.SGD(model, lr=0.03, momentum=0.9), x, labels)
    else:
        step = torch_train_step(torch_twin(model), x, labels)
    loss = step()  # compiles outside the timer
    assert np.isfinite(loss), f"{name} {peer}: first training step gave loss {loss}"
    record(f"{name} train step", "cpu", workload(model, TRAIN_BATCH), peer, batch, 3 * model.flops() * batch)
    benchmark(step)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """``path(name)``: the model exported by ``nc.onnx.export``, written once per module."""
    folder, paths = tmp_path_factory.mktemp("zoo_onnx"), {}

    def path(name: str) -> str:
        if name not in paths:
            pytest.importorskip("onnx")
            paths[name] = str(folder / f"{name}.onnx")
            nc.onnx.export(build(name), paths[name])
        return paths[name]

    return path


def _inference(peer: str, name: str, model: nc.Model, x: np.ndarray,
               onnx_path: Callable[[str], str]) -> Callable[[], Any]:
    if peer == "numbacnn":
        return lambda: model.forward(x)
    if peer == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(onnx_path(name), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        return lambda: session.run(None, {feed: x})[0]
    import torch

    net = torch_twin(model).eval()

    def run() -> Any:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return run


@pytest.mark.parametrize("peer", ["numbacnn", "torch", "onnxruntime"])
@pytest.mark.parametrize("batch", INFER_BATCHES, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("name", MODELS)
def test_model_inference_cpu(benchmark: Any, record: Any, smoke: bool, onnx_files: Callable[[str], str],
                             name: str, batch: int, peer: str) -> None:
    torch = pytest.importorskip("torch")
    run_batch = min(batch, SMOKE_BATCH) if smoke else batch
    model = build(name)
    x, _ = data(model, run_batch)
    fn = _inference(peer, name, model, x, onnx_files)
    if peer == "numbacnn":
        with torch.inference_mode():
            want = torch_twin(model).eval()(torch.from_numpy(x)).numpy()
    else:
        # The reference keeps every activation (grad=True): not the arena path being timed.
        want = build(name).forward(x, grad=True)
    check_same(f"{name} inference {peer}", fn(), want)
    record(f"{name} inference", "cpu", workload(model, batch), peer, run_batch, model.flops() * run_batch)
    benchmark(fn)
