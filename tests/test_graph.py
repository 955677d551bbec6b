"""Graph building, shape inference errors, executor fan-out, end-to-end gradient checks."""

import json

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import numeric_grad


def network3_graph(relu=True):
    g = nc.Graph()
    x = g.input((1, 28, 28))
    h = g.conv2d(x, out_channels=20, kernel_size=5, name="conv1")
    h = g.relu(h) if relu else h
    h = g.max_pool2d(h, kernel_size=2)
    h = g.conv2d(h, out_channels=40, kernel_size=5, name="conv2")
    h = g.relu(h)
    h = g.max_pool2d(h, kernel_size=2)
    h = g.flatten(h)
    h = g.linear(h, out_features=100, name="fc1")
    h = g.relu(h)
    g.output(g.linear(h, out_features=10, name="fc2"))
    return g


def fanout_graph():
    """One tensor feeds two branches, joined by add and by concat (and read a third time)."""
    g = nc.Graph()
    x = g.input((3, 6, 6))
    t = g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="stem")
    a = g.conv2d(t, out_channels=4, kernel_size=3, padding=1, name="a")
    b = g.relu(t, name="b")
    s = g.add(a, b, t, name="sum")
    c = g.concat(s, t, name="cat")
    h = g.flatten(g.max_pool2d(c, kernel_size=2))
    g.output(g.linear(h, out_features=5, name="fc"))
    return g


def check_model_gradients(model, x, points=4, seed=1):
    """End-to-end float64 finite-difference check of every parameter and the input."""
    rng = np.random.default_rng(seed)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape)
    model.zero_grad()
    gx = model.backward(gy)

    def loss():
        return float(np.sum(model.forward(x, training=True) * gy))

    targets = [("input", x, gx)] + [(k, model.params[k], model.grads[k].copy()) for k in model.params]
    for what, arr, analytic in targets:
        for j in rng.permutation(arr.size)[:points]:
            idx = np.unravel_index(int(j), arr.shape)
            fd = numeric_grad(loss, arr, idx, 1e-6)
            assert abs(analytic[idx] - fd) <= 1e-6 + 1e-5 * abs(fd), (what, idx, analytic[idx], fd)


def test_builders_and_explicit_layer_spelling():
    g = nc.Graph()
    x = g.input((2, 4, 4))
    a = g.relu(x)
    b = g.layer("relu", x, name="explicit")
    assert a.layer == b.layer == "relu"
    assert a.name == "relu_1" and b.name == "explicit"
    assert "conv2d" in dir(g)


def test_unknown_builder_is_an_attribute_error_with_close_names():
    g = nc.Graph()
    with pytest.raises(AttributeError, match="conv2d"):
        g.conv2dd
    with pytest.raises(nc.UnknownLayerError, match="Did you mean 'conv2d'"):
        nc.get_layer("conv2dd")


def test_duplicate_and_bad_names_are_refused():
    g = nc.Graph()
    x = g.input((1, 4, 4))
    g.relu(x, name="r")
    with pytest.raises(nc.GraphError, match="used twice"):
        g.relu(x, name="r")
    with pytest.raises(nc.GraphError, match="expected a node of this graph"):
        g.relu("nope")
    with pytest.raises(nc.GraphError, match="expected two or more inputs, found 1"):
        g.add(x)
    with pytest.raises(nc.GraphError, match="conv2d node 'c'"):
        g.conv2d(x, out_channels=-1, kernel_size=3, name="c")


def test_bad_graph_fails_at_model_naming_node_and_shapes():
    g = nc.Graph()
    x = g.input((3, 8, 8))
    a = g.conv2d(x, out_channels=4, kernel_size=3, name="a")
    b = g.conv2d(x, out_channels=4, kernel_size=1, name="b")
    g.output(g.add(a, b, name="join"))
    with pytest.raises(nc.ShapeError, match=r"add node 'join'.*\(4, 6, 6\).*\(4, 8, 8\)"):
        nc.Model(g)
    g = nc.Graph()
    g.output(g.linear(g.input((3, 8, 8)), out_features=2, name="fc"))
    with pytest.raises(nc.ShapeError, match="linear node 'fc'.*flatten"):
        nc.Model(g)


def test_input_validation_before_compute():
    model = nc.Model(network3_graph(), seed=0)
    with pytest.raises(TypeError, match="expected float32 data, found float64"):
        model.forward(np.zeros((2, 1, 28, 28)))
    with pytest.raises(nc.GraphError, match=r"expected shape \(N, 1, 28, 28\), found \(2, 28, 28\)"):
        model.forward(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        nc.Model(network3_graph()).backward(np.zeros((2, 10), np.float32))


def test_network3_forward_backward_and_finite_differences():
    model = nc.Model(network3_graph(), seed=0, dtype="float64")
    assert model.params["conv1.weight"].shape == (20, 1, 5, 5)
    assert model.params["fc1.weight"].shape == (100, 640)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    assert model.forward(x).shape == (2, 10)
    check_model_gradients(model, x)


def test_fanout_dag_gradients_sum_over_readers():
    model = nc.Model(fanout_graph(), seed=3, dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    check_model_gradients(model, x, points=6)


def test_backward_accumulates_and_zero_grad_clears():
    model = nc.Model(fanout_graph(), seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    gy = np.ones((2, 5), np.float32)
    model.forward(x, training=True)
    model.backward(gy)
    once = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x, training=True)
    model.backward(gy)
    for k in once:
        np.testing.assert_allclose(model.grads[k], 2 * once[k], rtol=1e-5, atol=1e-6)
    model.zero_grad()
    assert all(not v.any() for v in model.grads.values())


def test_float32_model_stays_float32_and_float64_copy_agrees():
    model = nc.Model(network3_graph(), seed=0)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    y = model.forward(x, training=True)
    gx = model.backward(np.ones_like(y))
    assert y.dtype == gx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())
    m64 = model.astype("float64")
    np.testing.assert_allclose(m64.forward(x.astype(np.float64)), y, rtol=1e-4, atol=1e-5)


def test_spec_round_trip_and_save_load(tmp_path):
    model = nc.Model(network3_graph(), seed=5)
    spec = json.loads(json.dumps(model.to_spec()))
    again = nc.Model.from_spec(spec)
    assert list(again.params) == list(model.params)
    assert spec["graph"]["nodes"][1]["provider"]["distribution"] == "numbacnn"
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nc.Model.load(path)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        nc.Model.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a numbacnn checkpoint"):
        nc.Model.load(bad)
    model = nc.Model(network3_graph(), seed=5)
    good = tmp_path / "good.npz"
    model.save(good)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        nc.Model.load(cut)


def test_summary_lists_nodes_params_and_flops():
    model = nc.Model(network3_graph(), seed=0)
    text = model.summary()
    assert "conv1" in text and "(20, 24, 24)" in text
    total = 20 * 25 + 20 + 40 * 20 * 25 + 40 + 640 * 100 + 100 + 100 * 10 + 10
    assert model.param_count() == total
    assert f"{total:,}" in text.splitlines()[-1]
    # conv1: 2 * 20 * 24 * 24 * 25 multiply-adds plus the bias adds
    assert model.flops() > 2 * 20 * 24 * 24 * 25


def test_params_are_live_arrays():
    model = nc.Model(network3_graph(), seed=0)
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    before = model.forward(x)
    model.params["fc2.bias"][...] += 1.0
    np.testing.assert_allclose(model.forward(x), before + 1.0, rtol=1e-5, atol=1e-5)


# the model's own graph ---------------------------------------------------------------------
def small_graph():
    g = nc.Graph()
    x = g.input((2, 4, 4))
    h = g.conv2d(x, out_channels=3, kernel_size=(3, 3), padding=1, name="conv")
    g.output(g.linear(g.flatten(g.relu(h)), out_features=4, name="fc"))
    return g


def test_editing_the_graph_after_model_does_not_reach_the_model(tmp_path):
    g = small_graph()
    model = nc.Model(g, seed=0)
    x = np.random.default_rng(0).random((2, 2, 4, 4), dtype=np.float32)
    y = model.forward(x, training=True)
    g.relu(g.nodes["fc"], name="extra")
    g.outputs = ["extra"]  # a direct edit: output() refuses to replace the outputs
    model.backward(np.ones_like(y))  # the model's outputs are still its own
    np.testing.assert_array_equal(model.forward(x), y)
    assert "extra" not in model.graph.nodes and tuple(model.graph.outputs) == ("fc",)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(nc.Model.load(tmp_path / "m.npz").forward(x), y)


def test_the_model_copies_layer_objects():
    layer = nc.get_layer("leaky_relu")(negative_slope=0.5)
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input((3,)), name="act"))
    model = nc.Model(g)
    x = -np.ones((1, 3), np.float32)
    layer.negative_slope = 0.25  # the user's object, not the model's
    np.testing.assert_array_equal(model.forward(x), -0.5 * np.ones((1, 3), np.float32))
    assert model.graph.nodes["act"].obj is not layer


def test_model_graph_is_frozen():
    model = nc.Model(small_graph())
    graph, node = model.graph, model.graph.nodes["conv"]
    for edit in (lambda: graph.relu(node), lambda: graph.input((3,), name="x2"),
                 lambda: graph.output(node), lambda: setattr(graph, "outputs", ["conv"])):
        with pytest.raises(nc.GraphError, match="frozen copy taken by nc.Model.*make a new nc.Model"):
            edit()
    with pytest.raises(TypeError):
        graph.nodes["x"] = node
    with pytest.raises(TypeError):
        node.config["out_channels"] = 7
    with pytest.raises(AttributeError):
        node.inputs = ()
    assert model.to_spec()["graph"]["nodes"][1]["config"]["kernel_size"] == [3, 3]  # JSON-shaped
    assert json.loads(json.dumps(model.to_spec())) == model.to_spec()
    again = model.astype("float64")  # reuses the frozen graph
    assert again.graph is model.graph


def test_output_is_set_once():
    g = nc.Graph()
    x = g.input((3,))
    a = g.relu(x, name="a")
    g.output(a)
    with pytest.raises(nc.GraphError, match=r"outputs already set to 'a'; call output\(a, b\) once"):
        g.output(g.tanh(x, name="b"))
    assert g.outputs == ["a"]


def test_without_output_the_single_sink_is_the_output_and_several_are_an_error():
    g = nc.Graph()
    x = g.input((3,))
    h = g.tanh(g.relu(x, name="r"), name="t")
    model = nc.Model(g)
    assert tuple(model.graph.outputs) == ("t",) and g.outputs == []  # the user's graph untouched
    g.relu(x, name="dangling")  # nothing reads it: now two candidates
    with pytest.raises(nc.GraphError, match=r"no output and 2 nodes that no other node reads \('t', "
                                            r"'dangling'\): mark the output with g.output\(h\)"):
        nc.Model(g)
    g.output(h)
    assert "dangling" not in nc.Model(g).graph.nodes  # the copy holds what the outputs need
    g = nc.Graph()
    g.input((3,))
    with pytest.raises(nc.GraphError, match=r"no output: add layers .* g.output\(h\)"):
        nc.Model(g)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "float16"])
def test_non_float_input_suggests_converting_the_data_only(dtype):
    model = nc.Model(small_graph())
    with pytest.raises(TypeError, match=rf"expected float32 data, found {dtype}; convert the data "
                                        rf"\(x.astype\(np.float32\)\)$"):
        model.forward(np.zeros((2, 2, 4, 4), dtype))
    with pytest.raises(TypeError, match=r"or the model \(model.astype\('float64'\)\)"):
        model.forward(np.zeros((2, 2, 4, 4)))
