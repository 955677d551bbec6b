"""nc.onnx.load on hand-built ONNX graphs: the traps (AveragePool's count_include_pad default,
BatchNormalization's momentum and training_mode, Dropout's ratio input), the folding (constant
shape arithmetic, Pad into the next conv or pool, MatMul + Add into linear, Identity, Flatten
and Reshape to flat), and the errors (an unsupported operator or attribute names the operator,
the ONNX node and what is supported; a malformed file is one line naming the file)."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def save(tmp_path, nodes, shape, inits=(), opset=17, outputs=("y",)):
    """A one-input model ("x", batch free) of ``nodes``, written to tmp_path/m.onnx (with its
    output shapes inferred: onnx.checker wants them)."""
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def agrees(path, shape, batch=3):
    """The loaded model against onnxruntime; returns the model."""
    model = nc.onnx.load(path)
    x = RNG.standard_normal((batch, *shape)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y = model.forward(x)
    np.testing.assert_allclose(y.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    return model


def layers(model):
    return [model.graph.nodes[n].layer for n in model.order]


def test_average_pool_counts_padding_only_when_told(tmp_path):
    """ONNX's count_include_pad defaults to 0, PyTorch's (numbacnn's) to True."""
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = agrees(save(tmp_path, [node], (2, 5, 5)), (2, 5, 5))
    assert model.graph.nodes["pool"].config["count_include_pad"] is False
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            count_include_pad=1, ceil_mode=1, strides=[2, 2])
    assert agrees(save(tmp_path, [node], (2, 6, 6)), (2, 6, 6)).graph.nodes["pool"].config["count_include_pad"]


@pytest.mark.parametrize("opset", [13, 14, 15, 17])
def test_batch_norm_momentum_is_one_minus_onnx_momentum(opset, tmp_path):
    C = 3
    inits = [const("s", RNG.uniform(0.5, 1.5, C)), const("b", RNG.uniform(-1, 1, C)),
             const("m", RNG.uniform(-1, 1, C)), const("v", RNG.uniform(0.5, 2, C))]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3,
                            momentum=0.8)
    model = agrees(save(tmp_path, [node], (C, 4, 4), inits, opset=opset), (C, 4, 4))
    config = model.graph.nodes["bn"].config
    assert config["momentum"] == pytest.approx(0.2) and config["eps"] == pytest.approx(1e-3)
    np.testing.assert_array_equal(model.buffers["bn.running_var"], numpy_helper.to_array(inits[3]))


def test_batch_norm_in_training_mode_is_refused(tmp_path):
    C = 2
    inits = [const(n, np.ones(C)) for n in "sbmv"]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], name="bn",
                            training_mode=1)
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="node 'bn'.*training_mode=1.*evaluation mode"):
        nc.onnx.load(save(tmp_path, [node], (C, 4, 4), inits, opset=15))


def test_dropout_takes_its_ratio_from_an_input(tmp_path):
    nodes = [helper.make_node("Constant", [], ["r"], value=const("r", 0.25)),
             helper.make_node("Dropout", ["x", "r"], ["y"], name="drop")]
    model = agrees(save(tmp_path, nodes, (4,)), (4,))
    assert layers(model) == ["dropout"] and model.graph.nodes["drop"].config["p"] == 0.25
    nodes = [helper.make_node("Dropout", ["x", "r"], ["d", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT)]
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="'drop'.*'mask' is read by other nodes"):
        nc.onnx.load(save(tmp_path, nodes, (4,), [const("r", 0.25)]))


def test_pytorch_shape_arithmetic_folds_into_a_flatten(tmp_path):
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="view")]
    inits = [const("ax", [0], np.int64), const("rest", [-1], np.int64)]
    assert layers(agrees(save(tmp_path, nodes, (2, 3, 4), inits), (2, 3, 4))) == ["flatten"]


@pytest.mark.parametrize("target", [[0, -1], [-1, 24], [0, 24]])
def test_reshape_to_flat_is_a_flatten(target, tmp_path):
    node = helper.make_node("Reshape", ["x", "t"], ["y"])
    assert layers(agrees(save(tmp_path, [node], (2, 3, 4), [const("t", target, np.int64)]), (2, 3, 4))) == ["flatten"]


def test_a_shape_computed_from_the_batch_size_is_refused(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),  # N * C * H * W
             helper.make_node("Reshape", ["x", "n"], ["y"], name="everything")]
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="'everything'.*depends on the batch size"):
        nc.onnx.load(save(tmp_path, nodes, (2, 3)))


def test_pad_folds_into_the_convolution_or_pool_that_reads_it(tmp_path):
    w = const("w", RNG.standard_normal((3, 2, 3, 3)))
    pads = const("p", [0, 0, 1, 2, 0, 0, 2, 1], np.int64)  # top 1, left 2, bottom 2, right 1
    nodes = [helper.make_node("Pad", ["x", "p"], ["xp"], name="pad"), helper.make_node("Conv", ["xp", "w"], ["y"], name="c")]
    model = agrees(save(tmp_path, nodes, (2, 5, 6), [w, pads]), (2, 5, 6))
    assert layers(model) == ["conv2d"] and tuple(model.graph.nodes["c"].config["padding"]) == (1, 2, 2, 1)
    sym = const("p", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    nodes = [helper.make_node("Pad", ["x", "p"], ["xp"]), helper.make_node("AveragePool", ["xp"], ["y"], kernel_shape=[3, 3])]
    assert layers(agrees(save(tmp_path, nodes, (2, 5, 5), [sym]), (2, 5, 5))) == ["avg_pool2d"]
    nodes = [helper.make_node("Pad", ["x", "p", "v"], ["xp"]), helper.make_node("MaxPool", ["xp"], ["y"], kernel_shape=[3, 3])]
    assert layers(agrees(save(tmp_path, nodes, (2, 5, 5), [sym, const("v", -np.inf)]), (2, 5, 5))) == ["max_pool2d"]


@pytest.mark.parametrize("reader, message", [
    (helper.make_node("MaxPool", ["xp"], ["y"], kernel_shape=[3, 3]), "pads with 0.0; a MaxPool pads with -inf"),
    (helper.make_node("Relu", ["xp"], ["y"], name="r"), "'r'.*folds a Pad only into"),
])
def test_a_pad_that_cannot_fold_is_refused(reader, message, tmp_path):
    nodes = [helper.make_node("Pad", ["x", "p"], ["xp"], name="pad"), reader]
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match=message):
        nc.onnx.load(save(tmp_path, nodes, (2, 5, 5), [const("p", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)]))


@pytest.mark.parametrize("trans_b, alpha, beta", [(1, 1.0, 1.0), (0, 0.5, 2.0)])
def test_gemm_is_a_linear(trans_b, alpha, beta, tmp_path):
    w = RNG.standard_normal((5, 4) if trans_b else (4, 5))
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc", transB=trans_b, alpha=alpha, beta=beta)
    model = agrees(save(tmp_path, [node], (4,), [const("w", w), const("c", RNG.standard_normal((1, 5)))]), (4,))
    assert layers(model) == ["linear"] and model.params["fc.weight"].shape == (5, 4)


def test_matmul_and_add_are_one_linear_with_a_bias(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"), helper.make_node("MatMul", ["f", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="bias")]
    inits = [const("w", RNG.standard_normal((12, 5))), const("b", RNG.standard_normal(5))]
    model = agrees(save(tmp_path, nodes, (3, 2, 2), inits), (3, 2, 2))
    assert layers(model) == ["flatten", "linear"] and model.graph.nodes["mm"].config["bias"] is True


def test_identity_squeeze_and_flatten_after_global_pooling_add_no_layers(tmp_path):
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("GlobalAveragePool", ["i"], ["g"], name="gap"),
             helper.make_node("Squeeze", ["g", "axes"], ["s"]), helper.make_node("Unsqueeze", ["s", "axes"], ["u"]),
             helper.make_node("Flatten", ["u"], ["y"])]
    model = agrees(save(tmp_path, nodes, (3, 4, 4), [const("axes", [2, 3], np.int64)]), (3, 4, 4))
    assert layers(model) == ["global_avg_pool2d"]


def test_node_names_are_sanitised_and_kept_unique(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/block/act:0"),
             helper.make_node("Relu", ["a"], ["y"], name="block.act.0")]
    assert nc.onnx.load(save(tmp_path, nodes, (3,))).order == ["block.act.0", "block.act.0_2"]


def test_an_unsupported_operator_names_itself_its_node_and_what_is_supported(tmp_path):
    node = helper.make_node("Erf", ["x"], ["y"], name="/gelu/Erf")
    with pytest.raises(nc.onnx.UnsupportedOperatorError) as e:
        nc.onnx.load(save(tmp_path, [node], (3,)))
    message = str(e.value)
    assert "m.onnx: ONNX node '/gelu/Erf': operator Erf (opset 17) is not supported" in message
    assert "Supported: Add, AveragePool, BatchNormalization" in message and "ai.numbacnn" in message


def test_an_unsupported_attribute_is_named(tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transA=1)
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match=r"'fc' \(Gemm, opset 17\): transA=1"):
        nc.onnx.load(save(tmp_path, [node], (4,), [const("w", np.ones((4, 4)))]))
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="up", mode="cubic")
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="'up'.*mode='cubic'"):
        nc.onnx.load(save(tmp_path, [node], (2, 3, 3), [const("s", [1, 1, 2, 2])]))


@pytest.mark.parametrize("content", [b"not an onnx file", b""])
def test_a_malformed_file_is_one_line_naming_it(content, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(nc.onnx.OnnxError) as e:
        nc.onnx.load(path)
    assert str(e.value).startswith(f"{path}: not a") and "\n" not in str(e.value)


def test_a_truncated_or_invalid_file_is_one_line_naming_it(tmp_path):
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], (3,))
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(nc.onnx.OnnxError, match=f"^{path}: not a"):
        nc.onnx.load(path)
    graph = helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(nc.onnx.OnnxError, match=f"^{path}: not a valid ONNX model: .*nowhere"):
        nc.onnx.load(path)
    with pytest.raises(FileNotFoundError, match="missing.onnx: no such file"):
        nc.onnx.load(tmp_path / "missing.onnx")


def test_old_opsets_are_refused(tmp_path):
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], (3,), opset=12)
    with pytest.raises(nc.onnx.OnnxError, match="opset 12; numbacnn reads opset 13 and newer"):
        nc.onnx.load(path)


def test_free_input_sizes_stay_free_unless_input_shape_fixes_them(tmp_path):
    """(test_onnx_free.py has the rest: PyTorch exports, sizes, refusals, the CLI)"""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    path = tmp_path / "free.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert nc.onnx.load(path).input_shapes == [(3, None, None)]
    assert nc.onnx.load(path, input_shape=(3, 5, 6)).input_shapes == [(3, 5, 6)]
    assert nc.onnx.load(path, input_shape=(3, 5, None)).input_shapes == [(3, 5, None)]
    with pytest.raises(nc.onnx.OnnxError, match=r"input_shape \(3, 5\) for input 'x' has 2 sizes; the file's input "
                                                r"has 3 per-sample sizes \(N, 3, H, W\)"):
        nc.onnx.load(path, input_shape=(3, 5))


def test_another_exporters_functions_are_expanded(tmp_path):
    """A model-local function numbacnn has no importer for loads as its body."""
    body = [helper.make_node("Relu", ["X"], ["r"]), helper.make_node("Tanh", ["r"], ["Y"])]
    fn = helper.make_function("custom.ops", "Twice", ["X"], ["Y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Twice", ["x"], ["y"], domain="custom.ops", name="t")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                                   helper.make_opsetid("custom.ops", 1)])
    onnx.save(model, str(tmp_path / "f.onnx"))
    assert layers(agrees(tmp_path / "f.onnx", (3,))) == ["relu", "tanh"]


def test_a_numbacnn_plugin_operator_without_its_plugin_says_so(tmp_path):
    node = helper.make_node("Mystery", ["x"], ["y"], domain="ai.numbacnn", name="m")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.numbacnn", 1)])
    onnx.save(model, str(tmp_path / "p.onnx"))
    with pytest.raises(nc.onnx.UnsupportedOperatorError,
                       match="operator ai.numbacnn.Mystery .*install the plugin that declares"):
        nc.onnx.load(tmp_path / "p.onnx")


def test_the_shape_of_a_padded_value_counts_its_padding(tmp_path):
    """Shape(Pad(x)) is the padded size, also while the Pad waits to be folded into a Conv."""
    nodes = [helper.make_node("Pad", ["x", "p"], ["xp"]), helper.make_node("Conv", ["xp", "w"], ["c"]),
             helper.make_node("Shape", ["xp"], ["s"]), helper.make_node("Reshape", ["c", "s"], ["y"])]
    inits = [const("p", [0, 0, 1, 2, 0, 0, 1, 0], np.int64), const("w", RNG.standard_normal((2, 2, 1, 1)))]
    assert layers(agrees(save(tmp_path, nodes, (2, 3, 3), inits), (2, 3, 3))) == ["conv2d"]


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_is_resolved_against_the_input_size(auto_pad, tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=auto_pad, strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["y"], auto_pad=auto_pad, kernel_shape=[3, 3])]  # pads 1, 1
    model = agrees(save(tmp_path, nodes, (2, 9, 10), [const("w", RNG.standard_normal((3, 2, 4, 4)))]), (2, 9, 10))
    assert layers(model) == ["conv2d", "max_pool2d"]
    node = helper.make_node("MaxPool", ["x"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[2, 2], name="even")
    if auto_pad != "VALID":  # an even window pads one side only, which numbacnn's pools do not
        with pytest.raises(nc.onnx.UnsupportedOperatorError, match="'even'.*asymmetric pads"):
            nc.onnx.load(save(tmp_path, [node], (2, 7, 8)))


@pytest.mark.parametrize("op, layer", [("ReduceMean", "global_avg_pool2d"), ("ReduceMax", "global_max_pool2d")])
def test_a_spatial_reduction_is_a_global_pooling(op, layer, tmp_path):
    if layer not in nc.layer_names():
        pytest.skip(f"numbacnn has no {layer} layer yet")
    node = helper.make_node(op, ["x"], ["y"], axes=[-2, -1], keepdims=0)
    assert layers(agrees(save(tmp_path, [node], (3, 4, 5), opset=17), (3, 4, 5))) == [layer]
    node = helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=0, name="r")
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="'r'.*only the spatial axes"):
        nc.onnx.load(save(tmp_path, [node], (3, 4, 5), opset=17))


def test_the_erf_gelu_is_fused_only_when_nothing_else_reads_its_steps(tmp_path):
    nodes = [helper.make_node("Div", ["x", "r2"], ["d"]), helper.make_node("Erf", ["d"], ["e"], name="/act/Erf"),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = [const("r2", 2 ** 0.5), const("one", 1.0), const("half", 0.5)]
    model = agrees(save(tmp_path, nodes, (2, 3), inits), (2, 3))
    assert [(n, model.graph.nodes[n].layer) for n in model.order] == [("act.Gelu", "gelu")]
    nodes.append(helper.make_node("Relu", ["e"], ["z"]))  # the Erf's output is read twice now
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match="node 'd': operator Div .* is not supported"):
        nc.onnx.load(save(tmp_path, nodes, (2, 3), inits, outputs=("y", "z")))
