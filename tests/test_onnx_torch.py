"""ONNX files exported by PyTorch from classic CNN shapes written here in plain torch.nn (tiny
widths, 8x8 to 32x32 images) load into numbacnn and agree with onnxruntime at batch 1 and 3.

Every net runs on the real layers (MobileNetV2's relu6, the encoder-decoder's
conv_transpose2d and upsample, the newer activations). The ResNet-18-style net (basic and
bottleneck blocks) has its own file, test_onnx_finetune.py.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn, F = torch.nn, torch.nn.functional

_spec = importlib.util.spec_from_file_location("onnx_arriving", Path(__file__).with_name("test_onnx_arriving.py"))
_arriving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_arriving)
layers_for = _arriving.layers_for  # the fixture: checks the layers a net needs are registered


class AlexNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(inplace=True))
        s.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        s.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 24), nn.ReLU(inplace=True),
                                     nn.Dropout(0.5), nn.Linear(24, 10))

    def forward(s, x):
        return s.classifier(torch.flatten(s.avgpool(s.features(x)), 1))


class VGGish(nn.Module):
    def __init__(s):
        super().__init__()
        layers, c = [], 3
        for v in (8, "M", 16, 16, "M", 24, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        s.features = nn.Sequential(*layers)
        s.classifier = nn.Sequential(nn.Linear(24 * 2 * 2, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))

    def forward(s, x):
        x = s.features(x)
        return s.classifier(x.view(x.size(0), -1))  # Shape -> Gather -> Concat -> Reshape


class Inception(nn.Module):
    def __init__(s, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        s.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU(True))
        s.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(True), nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU(True))
        s.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(True), nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU(True))
        s.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, pp, 1), nn.ReLU(True))

    def forward(s, x):
        return torch.cat([s.b1(x), s.b2(x), s.b3(x), s.b4(x)], 1)


class GoogLeNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True))
        s.a = Inception(8, 4, 4, 8, 2, 4, 4)
        s.b = Inception(20, 8, 4, 8, 2, 4, 4)
        s.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        s.drop = nn.Dropout(0.4)
        s.fc = nn.Linear(24, 10)

    def forward(s, x):
        return s.fc(s.drop(s.pool(s.b(s.a(s.stem(x)))).mean((2, 3))))  # ReduceMean over H, W


class InvertedResidual(nn.Module):
    def __init__(s, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        s.use_res = stride == 1 and cin == cout
        s.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(True),
            nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(s, x):
        return x + s.conv(x) if s.use_res else s.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(s):
        super().__init__()
        s.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(True),
            InvertedResidual(8, 8, 1, 1), InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3),
            nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(True))
        s.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(s, x):
        return s.classifier(torch.flatten(F.adaptive_avg_pool2d(s.features(x), (1, 1)), 1))


class Fire(nn.Module):
    def __init__(s, cin, sq, e1, e3):
        super().__init__()
        s.squeeze, s.e1, s.e3 = nn.Conv2d(cin, sq, 1), nn.Conv2d(sq, e1, 1), nn.Conv2d(sq, e3, 3, padding=1)

    def forward(s, x):
        x = F.relu(s.squeeze(x))
        return torch.cat([F.relu(s.e1(x)), F.relu(s.e3(x))], 1)


class SqueezeNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True),
                                   Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
                                   Fire(16, 6, 12, 12))
        s.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(24, 10, 1), nn.ReLU(True),
                                     nn.AdaptiveAvgPool2d((1, 1)))

    def forward(s, x):
        return torch.flatten(s.classifier(s.features(x)), 1)


class DenseLayer(nn.Module):
    def __init__(s, cin, growth):
        super().__init__()
        s.norm1, s.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        s.norm2, s.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(s, x):
        return torch.cat([x, s.conv2(F.relu(s.norm2(s.conv1(F.relu(s.norm1(x))))))], 1)


class DenseNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        s.block = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4), DenseLayer(16, 4))
        s.trans = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(True), nn.Conv2d(20, 10, 1, bias=False), nn.AvgPool2d(2, 2))
        s.norm = nn.BatchNorm2d(10)
        s.fc = nn.Linear(10, 10)

    def forward(s, x):
        x = F.relu(s.norm(s.trans(s.block(s.conv0(x)))))
        return s.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EncoderDecoder(nn.Module):
    def __init__(s):
        super().__init__()
        s.enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(True), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(True))
        s.up1 = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        s.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        s.out = nn.Conv2d(8, 2, 3, padding=1)

    def forward(s, x):
        return s.out(s.up2(F.relu(s.up1(s.enc(x)))))


class NewerLayers(nn.Module):
    """The activations, resizing and 1-D batch norm numbacnn gained after the first built-ins."""

    def __init__(s):
        super().__init__()
        s.conv, s.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        s.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        s.pool, s.fc, s.bn1 = nn.AdaptiveMaxPool2d((1, 1)), nn.Linear(6, 5), nn.BatchNorm1d(5)

    def forward(s, x):
        x = F.relu6(F.hardtanh(s.up(F.elu(s.bn(s.conv(x)), 0.5)), -0.5, 0.7))
        return F.log_softmax(s.bn1(s.fc(torch.flatten(s.pool(x), 1))), 1)


# net, image size, numbacnn layers it needs beyond the first built-ins
NETS = {
    "alexnet": (AlexNetish, 32, ()), "vgg": (VGGish, 16, ()), "googlenet": (GoogLeNetish, 16, ()),
    "mobilenetv2": (MobileNetV2ish, 16, ("relu6",)), "squeezenet": (SqueezeNetish, 32, ()),
    "densenet": (DenseNetish, 8, ()), "encoder_decoder": (EncoderDecoder, 16, ("conv_transpose2d", "upsample")),
    "newer_layers": (NewerLayers, 8, ("elu", "upsample", "hardtanh", "relu6", "batch_norm1d", "log_softmax")),
}


def randomise(net, seed=0):
    """Non-trivial batch-norm statistics and affine parameters (a fresh net's are 0/1)."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def export_torch(net, size, path, opset=17, fold=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, size, size), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          do_constant_folding=fold)
    return str(path)


def assert_close(actual, expected, rel=1e-4):
    """Agreement to ``rel`` of the expected output's scale."""
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * float(np.abs(expected).max()))


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
def test_a_pytorch_export_agrees_with_onnxruntime(name, fold, layers_for, tmp_path):
    cls, size, needs = NETS[name]
    layers_for(set(needs))
    torch.manual_seed(0)
    net = randomise(cls())
    # folded: PyTorch's constant folding merges each batch norm into its conv; unfolded keeps
    # BatchNormalization nodes (and Identity copies of equal initializers)
    path = export_torch(net, size, tmp_path / f"{name}.onnx", fold=fold)
    model = nc.onnx.load(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        y = model.forward(x)
        assert y.shape == expected.shape
        assert_close(y, expected)
        with torch.no_grad():
            assert_close(y, net(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_opsets_13_and_newer_load(opset, tmp_path):
    """Opset 13's Squeeze/ReduceMean forms (axes as attributes) and 18's (axes as inputs)."""
    net = randomise(GoogLeNetish())
    path = export_torch(net, 16, tmp_path / "g.onnx", opset=opset)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_close(nc.onnx.load(path).forward(x), expected)


def test_imported_models_are_ordinary_models(tmp_path):
    net = randomise(VGGish())
    model = nc.onnx.load(export_torch(net, 16, tmp_path / "vgg.onnx", fold=False))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    table = model.summary()
    for node in ("features.features.0.Conv", "features.features.1.BatchNormalization", "classifier.classifier.0.Gemm"):
        assert node in table  # the ONNX node names, sanitised
    assert model.params["features.features.0.Conv.weight"].shape == (8, 3, 3, 3)
    model.save(tmp_path / "vgg.npz")
    np.testing.assert_array_equal(nc.Model.load(tmp_path / "vgg.npz").forward(x), model.forward(x))
    nc.onnx.export(model, tmp_path / "again.onnx")
    np.testing.assert_array_equal(nc.onnx.load(tmp_path / "again.onnx").forward(x), model.forward(x))


@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_loads_from_opsets_without_gelu(opset, tmp_path):
    """Before opset 20 PyTorch writes nn.GELU() as Div, Erf, Add, Mul, Mul: one gelu again."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 2, 1), nn.GELU()).eval()
    path = export_torch(net, 8, tmp_path / "gelu.onnx", opset=opset)
    model = nc.onnx.load(path)
    assert [model.graph.nodes[n].layer for n in model.order] == ["conv2d", "gelu", "conv2d", "gelu"]
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert_close(model.forward(x), ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])
