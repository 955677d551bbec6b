"""An ONNX ResNet-18 imported into numbacnn: inference at batch 1 and 32, against the PyTorch
network it was exported from and onnxruntime running the same file, all on the same threads.

The network is torchvision's ResNet-18 layout written in torch.nn (7x7 stride-2 stem, 3x3
max pool, four stages of two basic blocks at 64/128/256/512 channels, global average pool,
a 1000-way linear) on 3x64x64 images, its batch-norm statistics randomised, exported by
PyTorch (eval mode, constant folding on, as users export) at opset 17 with a dynamic batch;
numbacnn loads that file with ``nc.onnx.load``. All three peers answer the same batch with
the same logits (checked once, outside the timer). onnxruntime runs sequentially on
``THREADS`` intra-op threads; numbacnn and PyTorch on theirs (conftest).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pytest

import numbacnn as nc
from _peers import SMOKE_BATCH, THREADS, check_same

WORKLOAD = "ResNet-18 3x64x64"
SIZE = 64


def _resnet18(torch: Any) -> Any:
    nn, F = torch.nn, torch.nn.functional

    class Basic(nn.Module):
        def __init__(self, cin: int, c: int, stride: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.down = None
            if stride != 1 or cin != c:
                self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x: Any) -> Any:
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, cin = [], 64
            for c, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(Basic(cin, c, stride), Basic(c, c, 1)))
                cin = c
            self.layers = nn.Sequential(*stages)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: Any) -> Any:
            x = self.layers(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    net = ResNet18()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    path = str(tmp_path_factory.mktemp("onnx") / "resnet18.onnx")
    net = _resnet18(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, SIZE, SIZE), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return net, path


def _peer(peer: str, net: Any, path: str, x: np.ndarray) -> tuple[Callable[[], Any], Any]:
    if peer == "numbacnn":
        model = nc.onnx.load(path)
        return (lambda: model.forward(x)), model
    if peer == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return (lambda: session.run(None, {"x": x})[0]), None
    import torch

    def run() -> Any:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return run, None


@pytest.mark.parametrize("peer", ["numbacnn", "torch", "onnxruntime"])
@pytest.mark.parametrize("batch", [1, 32], ids=lambda n: f"N{n}")
def test_onnx_resnet18_inference_cpu(benchmark: Any, record: Any, smoke: bool, exported: tuple[Any, str],
                                     batch: int, peer: str) -> None:
    import torch

    net, path = exported
    run_batch = min(batch, SMOKE_BATCH) if smoke else batch
    x = np.random.default_rng(0).standard_normal((run_batch, 3, SIZE, SIZE)).astype(np.float32)
    fn, model = _peer(peer, net, path, x)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    check_same(f"imported ResNet-18 inference {peer}", fn(), want)
    flops = (model or nc.onnx.load(path)).flops() * run_batch
    record("onnx resnet18 inference", "cpu", f"{WORKLOAD} N{batch}", peer, run_batch, flops)
    benchmark(fn)
