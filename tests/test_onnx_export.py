"""nc.onnx.export: every built-in layer, every zoo model and the plugins export, pass
onnx.checker, agree with onnxruntime and onnx.reference.ReferenceEvaluator to 1e-4 at batch 1
and 3, and come back through nc.onnx.load with the same outputs and node names.

Layers arriving later (conv_transpose2d, upsample, ...) have their cases in
test_onnx_arriving.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import numbacnn as nc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402


def assert_close(actual, expected, rel=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * float(np.abs(expected).max()))


def randomised(model, seed=1):
    """Weights and running statistics away from their initial 0/1 (which hide mistakes)."""
    rng = np.random.default_rng(seed)
    for key, value in model.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("var") else rng.uniform(-0.5, 0.5, value.shape)
    for key, value in model.params.items():
        value[...] += rng.uniform(-0.2, 0.2, value.shape).astype(value.dtype)
    return model


def check_export(model, path, opset=nc.onnx.DEFAULT_OPSET, reference=True, batches=(1, 3)):
    """Export, then compare with onnxruntime (and the reference evaluator), then round-trip."""
    nc.onnx.export(model, path, opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == opset or {o.domain: o.version for o in proto.opset_import}[""] == opset
    for vi in [*proto.graph.input, *proto.graph.output]:
        assert vi.type.tensor_type.shape.dim[0].dim_param == "N"
    assert [vi.name for vi in proto.graph.output] == list(model.graph.outputs)
    assert set(model.order) <= {n.name for n in proto.graph.node}, "ONNX node names are the graph's"
    back = nc.onnx.load(path)
    # onnxruntime's CPU Conv has no double kernel: float64 models meet the reference evaluator only
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) if model.dtype == np.float32 else None
    name = model.graph.inputs[0]
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, *model.input_shapes[0])).astype(model.dtype)
        y = model.forward(x)
        if session is not None:
            assert_close(y, session.run(None, {name: x})[0].reshape(y.shape))
        if reference:
            assert_close(y, ReferenceEvaluator(proto).run(None, {name: x})[0].reshape(y.shape))
        assert_close(back.forward(x).reshape(y.shape), y, rel=1e-6)
    return back


def every_builtin(g):
    x = g.input((3, 12, 12))
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="conv1"), name="bn1"))
    a = g.max_pool2d(h, kernel_size=2, name="mp")
    b = g.leaky_relu(g.avg_pool2d(h, kernel_size=3, stride=2, padding=1, count_include_pad=False, name="ap"),
                     negative_slope=0.2)
    c = g.sigmoid(g.concat(a, b))
    e = g.add(c, g.tanh(c))
    f = g.linear(g.global_avg_pool2d(e), out_features=8, bias=False)
    f2 = g.linear(g.dropout(g.flatten(e), p=0.3), out_features=8)
    return g.add(f, f2)


BUILTIN_CASES = {
    "every_builtin_layer": every_builtin,
    "conv2d_grouped_dilated_asymmetric": lambda g: g.conv2d(g.input((4, 9, 10)), out_channels=6, kernel_size=(3, 2),
                                                          stride=2, padding=(1, 0, 2, 1), dilation=2, groups=2),
    "conv2d_same_even_kernel_no_bias": lambda g: g.conv2d(g.input((2, 7, 7)), out_channels=3, kernel_size=4,
                                                        padding="same", bias=False),
    "avg_pool2d_ceil_include_pad": lambda g: g.avg_pool2d(g.input((2, 7, 8)), kernel_size=3, stride=2, padding=1,
                                                          ceil_mode=True),
    "avg_pool2d_ceil_exclude_pad": lambda g: g.avg_pool2d(g.input((2, 7, 8)), kernel_size=3, stride=2, padding=1,
                                                          ceil_mode=True, count_include_pad=False),
    "avg_pool2d_divisor_override": lambda g: g.avg_pool2d(g.input((2, 6, 6)), kernel_size=2, padding=1,
                                                          divisor_override=3),
    "max_pool2d_dilated_ceil": lambda g: g.max_pool2d(g.input((2, 9, 8)), kernel_size=3, stride=2, padding=1,
                                                      dilation=2, ceil_mode=True),
    "batch_norm2d_not_affine": lambda g: g.batch_norm2d(g.input((3, 4, 4)), affine=False, eps=1e-3),
    "batch_norm2d_batch_statistics": lambda g: g.batch_norm2d(g.input((3, 4, 4)), track_running_stats=False),
    "add_and_concat_of_three": lambda g: (lambda x: g.concat(g.add(x, g.relu(x), g.tanh(x)), x, g.sigmoid(x)))(
        g.input((2, 3, 3))),
    "dropout_flatten_linear": lambda g: g.linear(g.flatten(g.dropout(g.input((2, 3, 3)), p=0.0)), out_features=4),
}


@pytest.mark.parametrize("case", list(BUILTIN_CASES))
def test_builtin_layers_export(case, tmp_path):
    g = nc.Graph()
    g.output(BUILTIN_CASES[case](g))
    back = check_export(randomised(nc.Model(g)), tmp_path / "m.onnx")
    if case == "every_builtin_layer":
        builtins = {"add", "avg_pool2d", "batch_norm2d", "concat", "conv2d", "dropout", "flatten", "global_avg_pool2d",
                    "leaky_relu", "linear", "max_pool2d", "relu", "sigmoid", "tanh"}
        model_layers = {node.layer for node in g.nodes.values()} - {"input"}
        assert model_layers == builtins
        assert [(n, back.graph.nodes[n].layer) for n in back.order] == [(n, g.nodes[n].layer) for n in back.order]


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_older_opsets_export(opset, tmp_path):
    g = nc.Graph()
    out = every_builtin(g)
    stats = g.batch_norm2d(g.nodes["conv1"], track_running_stats=False, name="batch_stats")
    g.output(g.add(out, g.linear(g.global_avg_pool2d(stats), out_features=8)))
    # onnx.reference's BatchNormalization before opset 14 always normalises by the batch's
    # statistics (it takes the momentum attribute's default for training mode): onnxruntime only
    check_export(randomised(nc.Model(g)), tmp_path / "m.onnx", opset=opset, batches=(2,), reference=opset >= 14)


def test_float64_models_export_as_double(tmp_path):
    g = nc.Graph()
    g.output(every_builtin(g))
    model = randomised(nc.Model(g, dtype="float64"))
    check_export(model, tmp_path / "m.onnx", batches=(2,))
    assert onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


ZOO = {
    "lenet5": lambda: nc.zoo.lenet5(input_shape=(1, 8, 8)),
    "network3_conv2_relu_dropout": lambda: nc.zoo.network3("conv2_relu_dropout", input_shape=(1, 16, 16)),
    "network3_conv1": lambda: nc.zoo.network3("conv1", input_shape=(1, 12, 12)),
    "vgg_small_bn": lambda: nc.zoo.vgg_small(input_shape=(3, 8, 8), width=4, batch_norm=True),
    "googlenet_mini": lambda: nc.zoo.googlenet_mini(input_shape=(3, 8, 8)),
    "resnet_bottleneck": lambda: nc.zoo.resnet_bottleneck(depth=11, input_shape=(3, 8, 8)),
    "resnet_basic": lambda: nc.zoo.resnet_basic(depth=8, input_shape=(3, 8, 8)),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_models_export(name, tmp_path):
    check_export(randomised(ZOO[name]()), tmp_path / f"{name}.onnx")


def test_plugin_layers_export_as_functions(tmp_path):
    if not {"swish", "localconv", "spp"} <= set(nc.layer_names()):
        pytest.skip("the plugins are not installed")
    g = nc.Graph()
    h = g.swish(g.input((3, 9, 11)), beta=0.7, name="sw")
    h = g.localconv(h, out_channels=4, kernel_size=3, padding=(1, 0, 2, 1), stride=(1, 2), name="lc")
    h = g.localconv(h, out_channels=2, kernel_size=2, bias=False, name="lc2")
    g.output(g.spp(h, levels=[1, 2, 3], name="spp"))
    back = check_export(randomised(nc.Model(g)), tmp_path / "p.onnx")
    proto = onnx.load(str(tmp_path / "p.onnx"))
    assert {(f.domain, f.name) for f in proto.functions} == {("ai.numbacnn", n) for n in ("Swish", "LocalConv", "SPP")}
    assert [back.graph.nodes[n].layer for n in back.order] == ["swish", "localconv", "localconv", "spp"]
    assert back.graph.nodes["lc2"].config["bias"] is False


def test_two_spp_levels_are_two_overloads(tmp_path):
    """One function body per levels; onnx.reference ignores overloads, onnxruntime does not."""
    if "spp" not in nc.layer_names():
        pytest.skip("numbacnn-spp is not installed")
    g = nc.Graph()
    x = g.input((2, 7, 6))
    g.output(g.concat(g.spp(x, levels=[1, 2]), g.spp(x, levels=[3])))
    check_export(randomised(nc.Model(g)), tmp_path / "p.onnx", reference=False)


def test_a_layer_without_an_onnx_form_names_itself_its_node_and_the_hook(tmp_path):
    from numbacnn.registry import unregister_layer

    relu = nc.get_layer("relu")

    @nc.register_layer
    class Twice(relu):
        name = "twice_for_onnx_test"

    try:
        g = nc.Graph()
        g.output(g.twice_for_onnx_test(g.relu(g.input((3,))), name="mine"))
        with pytest.raises(nc.onnx.UnsupportedOperatorError) as e:
            nc.onnx.export(nc.Model(g), tmp_path / "m.onnx")
        message = str(e.value)
        assert "twice_for_onnx_test node 'mine'" in message and "onnx_export(self, ctx)" in message
        assert not (tmp_path / "m.onnx").exists()
    finally:
        unregister_layer("twice_for_onnx_test")


def test_bad_opset_and_folder_are_refused_before_writing(tmp_path):
    model = nc.zoo.lenet5(input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="opset must be an int from 13"):
        nc.onnx.export(model, tmp_path / "m.onnx", opset=12)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nc.onnx.export(model, tmp_path / "no" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_importing_numbacnn_imports_no_onnx():
    code = ("import sys, numbacnn as nc; m = nc.onnx; import numbacnn.cli; "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('onnx', 'onnxruntime')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_free_sizes_export_as_dim_params(tmp_path):
    g = nc.Graph()
    try:
        x = g.input((3, None, None))
    except nc.GraphError:
        pytest.skip("free input sizes (g.input((3, None, None))) are not in this numbacnn yet")
    h = g.relu(g.conv2d(x, out_channels=4, kernel_size=3, padding=1))
    g.output(g.linear(g.global_avg_pool2d(h), out_features=3))
    model = randomised(nc.Model(g))
    nc.onnx.export(model, tmp_path / "m.onnx")
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "input_dim2", "input_dim3"]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for size in ((8, 8), (11, 13)):
        x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
        assert_close(model.forward(x), session.run(None, {"input": x})[0])
    fixed = nc.onnx.load(tmp_path / "m.onnx", input_shape=(3, 11, 13))
    assert_close(fixed.forward(x), model.forward(x), rel=1e-6)
