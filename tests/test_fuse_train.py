"""Batch norm + relu fused for passes with gradients (numbacnn._fuse_train): the fused model
against the same model unfused (NUMBACNN_FUSE_RELU=0) bit for bit, outputs, input and weight
gradients and the optimizer's update included, NaN and the infinities too; what is fused."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _fuse_train
from numbacnn.layers import relu_cpu


def _model(graph: nc.Graph, dtype: str, fuse: bool, monkeypatch: pytest.MonkeyPatch) -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
    model = nc.Model(graph, seed=11, dtype=dtype)
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    return model


def _pairs(model: nc.Model) -> list[str]:
    """The relu nodes whose forward, in passes with gradients, keeps its batch norm's output."""
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("graph", [_bottleneck, _vector_bn])
def test_fused_step_is_the_unfused_step_bit_for_bit(graph, dtype, monkeypatch):
    fused, plain = _model(graph(), dtype, True, monkeypatch), _model(graph(), dtype, False, monkeypatch)
    assert _pairs(fused) and not _pairs(plain)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, *fused.input_shapes[0])).astype(dtype)
    y = np.arange(4) % 3
    opts = [nc.optim.SGD(m, lr=0.1, momentum=0.9) for m in (fused, plain)]
    for step in range(3):
        outs = [m.forward(x, training=True) for m in (fused, plain)]
        assert np.array_equal(outs[0], outs[1]), step
        gys = [nc.losses.cross_entropy(o, y)[1] for o in outs]
        gxs = [m.backward(gy) for m, gy in zip((fused, plain), gys)]
        assert np.array_equal(gxs[0], gxs[1])
        for k in fused.grads:
            assert np.array_equal(fused.grads[k], plain.grads[k]), k
        for opt in opts:
            opt.step()
    for k in fused.params:
        assert np.array_equal(fused.params[k], plain.params[k]), k
    for k in fused.buffers:
        assert np.array_equal(fused.buffers[k], plain.buffers[k]), k


def test_nan_and_infinities_as_unfused(monkeypatch):
    fused, plain = (_model(_bottleneck(), "float32", fuse, monkeypatch) for fuse in (True, False))
    x = np.random.default_rng(4).normal(size=(3, 8, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 2, 3, 4], x[2, 5, 1, 1] = np.nan, np.inf, -np.inf
    for kw in ({"training": True}, {"training": False, "grad": True}):
        outs = [m(x, **kw) for m in (fused, plain)]
        np.testing.assert_array_equal(outs[0], outs[1])  # NaN where NaN
        gy = np.ones_like(outs[0])
        np.testing.assert_array_equal(fused.backward(gy), plain.backward(gy))


def test_the_relu_pass_is_saved(monkeypatch):
    calls = []
    real = relu_cpu.relu_forward
    monkeypatch.setattr(relu_cpu, "relu_forward", lambda x, y: (calls.append(x.size), real(x, y))[1])
    g = nc.Graph()
    x = g.input((3, 5, 5))
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="c"), name="bn"), name="r")
    g.output(g.conv2d(h, out_channels=2, kernel_size=1, name="head"))
    for fuse, expect in ((True, 0), (False, 1)):
        model = _model(g, "float32", fuse, monkeypatch)
        calls.clear()
        model.forward(np.ones((2, 3, 5, 5), np.float32), training=True)
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
    assert _fuse_train.bn_relu_pairs(model._executor._steps, model._executor._readers, model._executor._keep,
                                     model._executor._first, "cuda") == []
