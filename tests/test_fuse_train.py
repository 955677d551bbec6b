"""A relu fused into the batch norm or add it reads, for passes with gradients
(numbacnn._fuse_train): the fused model against the same model unfused (NUMBACNN_FUSE_RELU=0)
bit for bit, outputs, input and weight gradients and the optimizer's update included, on
every CPU conv2d path, NaN and the infinities too; what is fused (not a conv2d's or a
linear's relu)."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _fuse_train
from numbacnn.layers import relu_cpu
from numbacnn.layers.conv2d_plan import force_path


def _model(graph: nc.Graph, dtype: str, fuse: bool, monkeypatch: pytest.MonkeyPatch) -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
    model = nc.Model(graph, seed=11, dtype=dtype)
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    return model


def _pairs(model: nc.Model) -> list[str]:
    """The relu nodes whose forward, in passes with gradients, keeps its producer's output."""
    ex = model._executor
    return [name for (_, _, layer, name), f in zip(ex._steps, ex._forwards)
            if layer == "relu" and f is _fuse_train.passed]


def _bottleneck() -> nc.Graph:
    g = nc.Graph()
    x = g.input((8, 6, 6))
    g.output(g.global_avg_pool2d(nc.blocks.bottleneck(g, x, mid_channels=4, out_channels=12, name="b")))
    return g


def _vector_bn() -> nc.Graph:  # batch_norm1d on (N, C): the kernel's other loop (L = 1)
    g = nc.Graph()
    x = g.input((7,))
    h = g.relu(g.batch_norm1d(g.linear(x, out_features=5, name="fc"), name="bn"), name="r")
    g.output(g.linear(h, out_features=3, name="out"))
    return g


def _conv_linear() -> nc.Graph:
    """conv2d + relu at 3x3 and 5x5 (float32 takes Winograd for both in training: 16 channels,
    10x10) and linear + relu, not fused; add + relu, fused."""
    g = nc.Graph()
    x = g.input((16, 10, 10))
    h = g.relu(g.conv2d(x, out_channels=16, kernel_size=3, padding=1, name="c1"), name="r1")
    h = g.relu(g.conv2d(h, out_channels=16, kernel_size=5, padding=2, bias=False, name="c2"), name="r2")
    h = g.relu(g.add(h, x, name="a"), name="ra")
    h = g.relu(g.linear(g.flatten(g.max_pool2d(h, kernel_size=2)), out_features=12, name="fc"), name="rf")
    g.output(g.linear(h, out_features=3, name="out"))
    return g


GRAPHS = {"bottleneck": _bottleneck, "vector_bn": _vector_bn, "conv_linear": _conv_linear}


@pytest.mark.parametrize("path", ["auto", "pixel", "im2col"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("graph", GRAPHS)
def test_fused_step_is_the_unfused_step_bit_for_bit(graph, dtype, path, monkeypatch):
    if path != "auto" and (graph != "conv_linear" or dtype == "float64"):
        pytest.skip("the forced conv paths: conv_linear in float32 (float64 takes im2col)")
    fused, plain = (_model(GRAPHS[graph](), dtype, fuse, monkeypatch) for fuse in (True, False))
    assert _pairs(fused) and not _pairs(plain)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, *fused.input_shapes[0])).astype(dtype)
    x[3] = 0.0  # a sample of zeros: outputs of exactly 0 (or -0.0) before the relu
    y = np.arange(4) % 3
    opts = [nc.optim.SGD(m, lr=0.1, momentum=0.9) for m in (fused, plain)]
    with force_path(path):
        _steps(fused, plain, opts, x, y)


def _steps(fused, plain, opts, x, y):
    for step in range(3):
        outs = [m.forward(x, training=True) for m in (fused, plain)]
        assert np.array_equal(outs[0].view(np.uint8), outs[1].view(np.uint8)), step
        gys = [nc.losses.cross_entropy(o, y)[1] for o in outs]
        gxs = [m.backward(gy) for m, gy in zip((fused, plain), gys)]
        assert np.array_equal(gxs[0], gxs[1])
        for k in fused.grads:
            assert np.array_equal(fused.grads[k].view(np.uint8), plain.grads[k].view(np.uint8)), k
        for opt in opts:
            opt.step()
    for k in fused.params:
        assert np.array_equal(fused.params[k], plain.params[k]), k
    for k in fused.buffers:
        assert np.array_equal(fused.buffers[k], plain.buffers[k]), k


@pytest.mark.parametrize("graph", ["bottleneck", "conv_linear"])
def test_nan_and_infinities_as_unfused(graph, monkeypatch):
    fused, plain = (_model(GRAPHS[graph](), "float32", fuse, monkeypatch) for fuse in (True, False))
    x = np.random.default_rng(4).normal(size=(3, *fused.input_shapes[0])).astype(np.float32)
    x[0, 0, 0, 0], x[1, 2, 3, 4], x[2, 5, 1, 1] = np.nan, np.inf, -np.inf
    for kw in ({"training": True}, {"training": False, "grad": True}):
        outs = [m(x, **kw) for m in (fused, plain)]
        np.testing.assert_array_equal(outs[0], outs[1])  # NaN where NaN
        gy = np.ones_like(outs[0])
        np.testing.assert_array_equal(fused.backward(gy), plain.backward(gy))


def _bn_head() -> nc.Graph:
    g = nc.Graph()
    x = g.input((3, 5, 5))
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="c"), name="bn"), name="r")
    g.output(g.conv2d(h, out_channels=2, kernel_size=1, name="head"))
    return g


@pytest.mark.parametrize("graph, fused_calls, relus", [(_bn_head, 0, 1), (_conv_linear, 3, 4)])
def test_the_relu_pass_is_saved(graph, fused_calls, relus, monkeypatch):
    # Unfused, each relu node runs relu_forward; fused, the batch norm applies relu's rule as
    # it writes its output and the add through add_relu_forward; a conv2d's and a linear's
    # relus run as nodes of their own either way.
    calls = []
    real = relu_cpu.relu_forward
    monkeypatch.setattr(relu_cpu, "relu_forward", lambda x, y: (calls.append(x.size), real(x, y))[1])
    for fuse, expect in ((True, fused_calls), (False, relus)):
        model = _model(graph(), "float32", fuse, monkeypatch)
        calls.clear()
        model.forward(np.ones((2, *model.input_shapes[0]), np.float32), training=True)
        assert len(calls) == expect, (fuse, calls)


def test_what_is_fused(monkeypatch):
    g = nc.Graph()
    x = g.input((4, 5, 5))
    b1 = g.batch_norm2d(x, name="bn1")                      # read by a relu and a conv: not fused
    r1 = g.relu(b1, name="r1")
    c1 = g.conv2d(b1, out_channels=4, kernel_size=1, name="c1")
    b2 = g.batch_norm2d(g.add(r1, c1, name="a"), name="bn2")  # read by its relu alone: fused
    r2 = g.relu(b2, name="r2")
    b3 = g.batch_norm2d(r2, name="bn3")                     # a graph output itself: not fused
    g.output(g.relu(b3, name="r3"), b3)
    model = _model(g, "float32", True, monkeypatch)
    assert _pairs(model) == ["r2"]
    assert _pairs(_model(_conv_linear(), "float32", True, monkeypatch)) == ["ra"]
    assert _fuse_train.relu_pairs(model._executor._steps, model._executor._readers, model._executor._keep,
                                     model._executor._first, "cuda") == []
