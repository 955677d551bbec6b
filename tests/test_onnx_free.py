"""Free input sizes through ONNX: a file whose input is (N, C, H, W) with dim_params for H and
W loads as a graph with ``g.input((C, None, None))`` (no input_shape needed), agrees with
onnxruntime at several sizes, and exports back with dim_params; what the importers would fix
from the size (a linear after flatten, a Resize to sizes computed from the input's shape, a
strided SAME auto_pad) is refused, naming the ONNX node and suggesting input_shape.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.cli import main

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_spec = importlib.util.spec_from_file_location("onnx_torch_nets", Path(__file__).with_name("test_onnx_torch.py"))
_nets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nets)
layers_for = _nets.layers_for  # the fixture: checks the layers a net needs are registered
RNG = np.random.default_rng(0)
SIZES = ((16, 16), (23, 19))


def assert_close(actual, expected, rel=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * float(np.abs(expected).max()))


def export_free(net, path, size=16, opset=17):
    """PyTorch's export with the batch, height and width as dim_params."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, size, size), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N"}})
    return str(path)


def agrees_at(model, path, sizes=SIZES, name="x", channels=3, batch=2):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in sizes:
        x = RNG.standard_normal((batch, channels, *size)).astype(np.float32)
        expected = session.run(None, {name: x})[0]
        y = model.forward(x)
        assert y.shape == expected.shape, size
        assert_close(y, expected)


def free_graph():
    g = nc.Graph()
    x = g.input((3, None, None))
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=6, kernel_size=3, stride=2, padding=1, name="conv1")))
    a = g.max_pool2d(h, kernel_size=3, stride=1, padding=1, name="mp")
    b = g.avg_pool2d(h, kernel_size=3, stride=1, padding=1, count_include_pad=False, name="ap")
    h = g.upsample(g.concat(a, b), scale_factor=2, mode="nearest", name="up")
    h = g.conv2d(h, out_channels=4, kernel_size=3, padding="same", name="conv2")
    g.output(g.linear(g.global_avg_pool2d(g.sigmoid(h)), out_features=5, name="fc"))
    rng = np.random.default_rng(1)
    model = nc.Model(g)
    for key, value in {**model.params, **model.buffers}.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("var") else rng.uniform(-0.5, 0.5, value.shape)
    return model


def test_a_free_size_model_goes_round_at_two_sizes(tmp_path):
    model = free_graph()
    path = tmp_path / "m.onnx"
    nc.onnx.export(model, path)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "input_dim2", "input_dim3"]
    back = nc.onnx.load(path)
    assert back.input_shapes == [(3, None, None)]
    assert back.shapes["conv2"] == (4, None, None) and back.output_shape == (5,)
    agrees_at(back, path, name="input")
    for size in SIZES:
        x = RNG.standard_normal((3, 3, *size)).astype(np.float32)
        assert_close(back.forward(x), model.forward(x), rel=1e-6)
    fixed = nc.onnx.load(path, input_shape=(3, 23, 19))  # input_shape still fixes the sizes
    assert fixed.input_shapes == [(3, 23, 19)]
    agrees_at(fixed, path, sizes=[(23, 19)], name="input")
    nc.onnx.export(back, tmp_path / "again.onnx")  # and the imported model exports free again
    dims = onnx.load(str(tmp_path / "again.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "input_dim2", "input_dim3"]


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "mobilenetv2", "squeezenet", "densenet",
                                  "encoder_decoder"])
def test_a_pytorch_export_with_free_height_and_width(name, layers_for, tmp_path):
    cls, size, needs = _nets.NETS[name]
    layers_for(set(needs))
    torch.manual_seed(0)
    net = _nets.randomise(cls())
    path = export_free(net, tmp_path / f"{name}.onnx", size=size)
    model = nc.onnx.load(path)
    assert model.input_shapes == [(3, None, None)]
    agrees_at(model, path, sizes=[(size, size), (size + 8, size + 16)])


def test_a_linear_after_flatten_is_refused_naming_the_node(tmp_path):
    """main's message for a size-dependent linear, with the ONNX node and input_shape added."""
    net = _nets.randomise(_nets.VGGish())
    path = export_free(net, tmp_path / "vgg.onnx")
    with pytest.raises(nc.onnx.OnnxError) as e:
        nc.onnx.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ONNX node '/classifier/classifier.0/Gemm': linear node ")
    assert "its parameters would depend on the free input size" in message
    assert "pass input_shape=(C, H, W) to nc.onnx.load" in message
    agrees_at(nc.onnx.load(path, input_shape=(3, 16, 16)), path, sizes=[(16, 16)])


def save(tmp_path, nodes, inits=(), opset=18, shape=("N", 2, "H", "W")):
    graph = helper.make_graph(nodes, "free", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))  # onnx.checker wants the output's type
    return path


def weight(name="w", shape=(3, 2, 3, 3)):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def test_a_resize_to_sizes_from_the_input_shape_is_refused(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=2), helper.make_node("Mul", ["s", "two"], ["hw"]),
             helper.make_node("Resize", ["x", "", "", "hw"], ["y"], name="grow", axes=[2, 3],
                              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    path = save(tmp_path, nodes, [numpy_helper.from_array(np.array([2, 2], np.int64), "two")])
    with pytest.raises(nc.onnx.OnnxError, match=r"ONNX node 'grow': its upsample layer's size depends on the "
                                                r"input's free sizes \(\(192, 192\) with them set to 96, \(320, 320\) "
                                                r"at 160\).*pass input_shape"):
        nc.onnx.load(path)
    assert nc.onnx.load(path, input_shape=(2, 5, 7)).output_shape == (2, 10, 14)


def test_a_strided_same_auto_pad_is_refused_a_unit_stride_one_loads(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER", strides=[2, 2])
    path = save(tmp_path, [node], [weight()])
    with pytest.raises(nc.onnx.OnnxError, match="ONNX node 'c': auto_pad=SAME_UPPER with strides \\[2, 2\\]: its "
                                                "padding depends on the input's free sizes.*pass input_shape"):
        nc.onnx.load(path)
    agrees_at(nc.onnx.load(path, input_shape=(2, 9, 8)), path, sizes=[(9, 8)], channels=2)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_LOWER", strides=[1, 1])
    path = save(tmp_path, [node], [weight("w", (3, 2, 4, 4))])
    agrees_at(nc.onnx.load(path), path, sizes=[(9, 8), (6, 11)], channels=2)


def test_one_free_axis_and_free_channels(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3])
    path = save(tmp_path, [node], shape=("N", 2, 5, "W"))
    model = nc.onnx.load(path)
    assert model.input_shapes == [(2, 5, None)] and model.output_shape == (2, 4, None)
    agrees_at(model, path, sizes=[(5, 7), (5, 12)], channels=2)
    path = save(tmp_path, [node], shape=("N", "C", 5, 6))
    with pytest.raises(nc.onnx.OnnxError, match="input 'x' has a free channel count \\(N, C, 5, 6\\).*input_shape"):
        nc.onnx.load(path)


def test_the_cli_imports_a_free_size_file_without_input_shape(tmp_path, capsys):
    nc.onnx.export(free_graph(), tmp_path / "m.onnx")
    assert main(["import", str(tmp_path / "m.onnx"), str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "(4, ?, ?)" in out and out.endswith(f"wrote {tmp_path / 'm.npz'}\n")
    model = nc.Model.load(tmp_path / "m.npz")
    assert model.input_shapes == [(3, None, None)]
    agrees_at(model, tmp_path / "m.onnx", name="input")


def test_a_node_that_fails_at_the_probe_size_says_so(tmp_path):
    """A Reshape to a constant width works at one size only: the error says the free sizes
    were set to 96 to import, and how to fix them."""
    node = helper.make_node("Reshape", ["x", "flat"], ["y"], name="flat")
    path = save(tmp_path, [node], [numpy_helper.from_array(np.array([0, 2 * 4 * 5], np.int64), "flat")])
    with pytest.raises(nc.onnx.OnnxError, match=r"ONNX node 'flat' .*reshape of \(2, 96, 96\) to \(40,\) .*\(imported "
                                                r"with the input's free sizes set to 96; if this node needs fixed "
                                                r"sizes, pass input_shape=\(C, H, W\)"):
        nc.onnx.load(path)
    assert nc.onnx.load(path, input_shape=(2, 4, 5)).output_shape == (40,)
