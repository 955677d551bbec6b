"""The executor's plans: decisions made once per input signature, replayed after that."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn._arena import Arena
from numbacnn.layer import Ctx


class Twice(nc.Layer):
    """y = 2 x through a scratch buffer asked for with a list shape; counts its plan's makes."""

    name = "twice_test"
    made = 0

    def output_shape(self, x_shape):
        return x_shape

    def _plan(self, shape):
        Twice.made += 1
        return list(shape)

    def forward_cpu(self, ctx, x):
        shape = ctx.plan(x.shape, lambda: self._plan(x.shape))
        tmp = ctx.empty(shape)  # a list, not a tuple: still the same buffer every call
        np.multiply(x, 2, out=tmp)
        y = ctx.empty_like(x)
        y[...] = tmp
        ctx.save()
        return y

    def backward_cpu(self, ctx, gy):
        gx = ctx.empty(list(gy.shape))
        np.multiply(gy, 2, out=gx)
        return gx


class Extra(nc.Layer):
    """y = x, with one more scratch buffer only when x[0, 0] > 0: requests that follow the data."""

    name = "extra_test"

    def output_shape(self, x_shape):
        return x_shape

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        if x.flat[0] > 0:
            s = ctx.empty_like(x)
            s[...] = x * 4
            y[...] = s / 4
        else:
            y[...] = x
        ctx.save()
        return y

    def backward_cpu(self, ctx, gy):
        return gy


def model_of(*layers, shape=(3, 4)):
    g = nc.Graph()
    x = g.input(shape)
    h = x
    for i, layer in enumerate(layers):
        h = g.add_layer(layer, h, name=f"l{i}")
    return nc.Model(g, seed=0)


def test_replayed_inference_does_no_arena_bookkeeping_and_allocates_nothing(monkeypatch):
    model = nc.zoo.network3(seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    want = model.forward(x)

    def refuse(*args, **kwargs):
        raise AssertionError("a replayed call decided again")

    for name in ("take", "release", "retain", "reset"):
        monkeypatch.setattr(Arena, name, refuse)
    monkeypatch.setattr(Ctx, "_new", refuse)
    np.testing.assert_array_equal(model.forward(x), want)
    np.testing.assert_array_equal(model.forward(x * 1), want)


def test_replayed_training_step_takes_every_buffer_from_its_plan(monkeypatch):
    model = nc.zoo.network3(seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    gy = np.ones((4, 10), np.float32)
    model.forward(x, training=True)
    first = model.backward(gy)

    def refuse(*args, **kwargs):
        raise AssertionError("a replayed step asked for a buffer its plan does not hold")

    monkeypatch.setattr(Ctx, "_new", refuse)
    model.forward(x, training=True)
    np.testing.assert_array_equal(model.backward(gy), first)


def test_layer_plans_are_made_once_per_signature_and_lists_reuse_buffers():
    from numbacnn.device import get_backend

    Twice.made = 0
    model = model_of(Twice(), Twice())
    x = np.ones((2, 3, 4), np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), 4 * x)
    assert Twice.made == 2  # one per node, inference
    backend = get_backend("cpu")
    for _ in range(3):
        model.forward(x, training=True)
        np.testing.assert_array_equal(model.backward(np.ones_like(x)), 4 * x)
    assert Twice.made == 4  # and one per node for the training signature
    before = backend.allocations
    model.forward(x, training=True)
    model.backward(np.ones_like(x))
    model.forward(x)
    assert backend.allocations == before
    model.forward(np.ones((5, 3, 4), np.float32))  # a new batch size is a new signature
    assert Twice.made == 6


def test_requests_that_follow_the_data_get_private_buffers_on_replay():
    # l0's output is alive while l1 runs; l1's extra buffer, new on replay, must not be it.
    g = nc.Graph()
    x = g.input((3, 4))
    a = g.add_layer(Twice(), x, name="a")
    b = g.add_layer(Extra(), a, name="b")
    g.output(g.add(a, b, name="sum"))
    model = nc.Model(g)
    rng = np.random.default_rng(0)
    for first in (-1.0, 1.0, -1.0, 1.0):
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        x.flat[0] = first
        np.testing.assert_allclose(model.forward(x), 4 * x, rtol=1e-6)


def test_bad_inputs_are_refused_after_a_plan_exists():
    model = model_of(Twice())
    model.forward(np.ones((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="expected float32 data, found float64"):
        model.forward(np.ones((2, 3, 4)))
    with pytest.raises(nc.GraphError, match=r"expected shape \(N, 3, 4\), found \(2, 4, 3\)"):
        model.forward(np.ones((2, 4, 3), np.float32))
    with pytest.raises(TypeError, match="expected an array, found list"):
        model.forward([[1.0]])


def test_a_layer_returning_a_wrong_shape_is_caught_on_replay_too():
    class Shrinks(Extra):
        name = "shrinks_test"
        calls = 0

        def forward_cpu(self, ctx, x):
            Shrinks.calls += 1
            y = ctx.empty_like(x)
            y[...] = x
            return y if Shrinks.calls < 2 else y[:, :2]

    model = model_of(Shrinks())
    model.forward(np.ones((2, 3, 4), np.float32))
    with pytest.raises(nc.GraphError, match=r"shrinks_test node 'l0': forward returned float32 \(2, 2, 4\), "
                                            r"expected float32 \(2, 3, 4\) \(a bug in the layer\)"):
        model.forward(np.ones((2, 3, 4), np.float32))


def test_a_first_inference_that_failed_leaves_no_stale_buffers_behind():
    # The failed pass handed out arena buffers; the next one decides afresh, or a later node
    # could be given the buffer still holding 'a' (which the join reads last).
    class FailsOnce(Extra):
        name = "fails_once_test"
        failed = False

        def forward_cpu(self, ctx, x):
            y = ctx.empty_like(x)
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("once")
            y[...] = x
            return y

    g = nc.Graph()
    x = g.input((3, 4))
    a = g.add_layer(Twice(), x, name="a")
    b = g.add_layer(FailsOnce(), a, name="b")
    c = g.add_layer(Twice(), b, name="c")
    g.output(g.add(a, c, name="sum"))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.raises(RuntimeError, match="once"):
        model.forward(x)
    np.testing.assert_allclose(model.forward(x), 6 * x, rtol=1e-6)
    np.testing.assert_allclose(model.forward(x), 6 * x, rtol=1e-6)
