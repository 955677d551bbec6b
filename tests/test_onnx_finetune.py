"""An imported ResNet-18-style model (basic and bottleneck blocks, written here in plain
torch.nn) agrees with onnxruntime, trains like the PyTorch original (outputs, every parameter
gradient and the running statistics after a training step), and fine-tunes."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import numbacnn as nc

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn, F = torch.nn, torch.nn.functional


class Basic(nn.Module):
    def __init__(s, cin, c, stride=1):
        super().__init__()
        s.conv1, s.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        s.conv2, s.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        s.down = None
        if stride != 1 or cin != c:
            s.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(s, x):
        y = s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x)))))
        return F.relu(y + (x if s.down is None else s.down(x)))


class Bottleneck(nn.Module):
    def __init__(s, cin, c, stride=1):
        super().__init__()
        s.conv1, s.bn1 = nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c)
        s.conv2, s.bn2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        s.conv3, s.bn3 = nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c)
        s.down = None
        if stride != 1 or cin != 4 * c:
            s.down = nn.Sequential(nn.Conv2d(cin, 4 * c, 1, stride, bias=False), nn.BatchNorm2d(4 * c))

    def forward(s, x):
        y = F.relu(s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x))))))
        return F.relu(s.bn3(s.conv3(y)) + (x if s.down is None else s.down(x)))


class ResNetish(nn.Module):
    """ResNet-18's layout (7x7 stem, max pool, four stages of two blocks, GAP, fc) at tiny
    widths, its last stage of bottleneck blocks so both block kinds are in one net."""

    def __init__(s, widths=(4, 8, 8, 4), classes=10):
        super().__init__()
        s.conv1, s.bn1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0])
        s.maxpool = nn.MaxPool2d(3, 2, 1)
        s.layer1 = nn.Sequential(Basic(widths[0], widths[0]), Basic(widths[0], widths[0]))
        s.layer2 = nn.Sequential(Basic(widths[0], widths[1], 2), Basic(widths[1], widths[1]))
        s.layer3 = nn.Sequential(Basic(widths[1], widths[2], 2), Basic(widths[2], widths[2]))
        s.layer4 = nn.Sequential(Bottleneck(widths[2], widths[3], 2), Bottleneck(4 * widths[3], widths[3]))
        s.avgpool = nn.AdaptiveAvgPool2d(1)
        s.fc = nn.Linear(4 * widths[3], classes)

    def forward(s, x):
        x = s.maxpool(F.relu(s.bn1(s.conv1(x))))
        x = s.layer4(s.layer3(s.layer2(s.layer1(x))))
        return s.fc(torch.flatten(s.avgpool(x), 1))


# the parameters of each ONNX operator's inputs, in input order (numbacnn's names)
ROLES = {"Conv": ["", "weight", "bias"], "Gemm": ["", "weight", "bias"],
         "BatchNormalization": ["", "weight", "bias", "running_mean", "running_var"]}


def resnet(tmp_path, size=32):
    torch.manual_seed(0)
    net = ResNetish()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # distinct values: PyTorch would share equal initializers
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    path = str(tmp_path / "resnet.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # do_constant_folding=False keeps the batch norms as nodes: a model to fine-tune
        torch.onnx.export(net, torch.randn(1, 3, size, size), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          do_constant_folding=False)
    return net, path


def names(path):
    """PyTorch's parameter name -> numbacnn's key, read off the ONNX file's nodes."""
    table = {}
    for node in onnx.load(path).graph.node:
        for role, name in zip(ROLES.get(node.op_type, []), node.input):
            if role:
                table[name] = f"{re.sub(r'[/:]+', '.', node.name).strip('.')}.{role}"
    return table


def assert_close(actual, expected, rel=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * float(np.abs(expected).max()))


def test_resnet18_style_agrees_with_onnxruntime(tmp_path):
    net, path = resnet(tmp_path)
    model = nc.onnx.load(path)
    kinds = {model.graph.nodes[n].layer for n in model.order}
    assert {"conv2d", "batch_norm2d", "add", "max_pool2d", "global_avg_pool2d", "linear"} <= kinds
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        assert_close(model.forward(x), expected)


def test_resnet18_style_trains_as_pytorch_does(tmp_path):
    net, path = resnet(tmp_path)
    model = nc.onnx.load(path)
    table = names(path)
    torch_params = dict(net.named_parameters())
    assert set(torch_params) <= set(table), "every PyTorch parameter is a numbacnn one"
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = np.array([1, 7, 3, 3])

    net.train()
    ty = net(torch.from_numpy(x))
    F.cross_entropy(ty, torch.from_numpy(labels)).backward()
    y = model.forward(x, training=True)
    loss, gy = nc.losses.cross_entropy(y, labels)
    model.backward(gy, input_grad=False)
    assert_close(y, ty.detach().numpy())
    for name, p in torch_params.items():
        assert_close(model.grads[table[name]], p.grad.numpy(), rel=1e-3)
    # the momentum trap: ONNX's momentum is PyTorch's 1 - momentum
    for name, buf in net.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            assert_close(model.buffers[table[name]], buf.numpy())


def test_an_imported_resnet_fine_tunes(tmp_path):
    _, path = resnet(tmp_path, size=16)
    model = nc.onnx.load(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    opt = nc.optim.SGD(model, lr=0.1)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss, gy = nc.losses.cross_entropy(model.forward(x, training=True), labels)
        model.backward(gy, input_grad=False)
        opt.step()
        losses.append(loss)
    # batch statistics of 16 images make single steps noisy; the trend is what counts
    assert losses[-1] < 0.75 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.cuda
def test_an_imported_model_runs_on_cuda(tmp_path):
    _, path = resnet(tmp_path, size=8)
    model = nc.onnx.load(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = model.forward(x)
    assert_close(model.to("cuda").forward(x), expected)
