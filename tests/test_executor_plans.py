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


class BatchMean(nc.Layer):
    """y = x - the batch's mean: a layer whose inference mixes the samples (a plugin may)."""

    name = "batch_mean_test"

    def output_shape(self, x_shape):
        return x_shape

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        y[...] = x - x.mean(axis=0)
        ctx.save()
        return y

    def backward_cpu(self, ctx, gy):
        return gy


def _parts_everywhere(monkeypatch):
    import numbacnn._passes as passes

    monkeypatch.setattr(passes, "MICRO_BATCH_BYTES", 1)  # every activation "too large": parts of the minimum
    monkeypatch.setattr(passes, "MICRO_BATCH_MIN", 3)
    monkeypatch.setattr(passes, "MICRO_BATCH_PER_THREAD", 0)  # parts of 3 on any number of threads
    monkeypatch.setattr(passes, "MICRO_BATCH_MIN_TRAFFIC", 0)


def _two_in_two_out():
    g = nc.Graph()
    a, b = g.input((2, 6, 6), name="a"), g.input((3, 6, 6), name="b")
    h = g.relu(g.conv2d(g.concat(a, b), out_channels=4, kernel_size=3, padding=1, name="c"))
    h = g.batch_norm2d(h, name="bn")
    g.output(g.linear(g.flatten(g.max_pool2d(h, kernel_size=2)), out_features=5, name="fc"),
             g.global_avg_pool2d(h, name="gap"))
    return g


def test_large_inference_batches_run_in_parts_with_the_whole_batch_s_answers(monkeypatch):
    # Every sample's outputs as a pass over it alone gives them (float64: im2col at any batch),
    # gathered in arrays of the whole batch, for two inputs and two outputs; the parts as equal
    # as they come, none under the least size (8 by at least 3: 4 and 4), a part size's plan
    # replayed on the next call.
    _parts_everywhere(monkeypatch)
    model = nc.Model(_two_in_two_out(), seed=0, dtype="float64")
    for key, value in model.buffers.items():  # running statistics of their own (not 0 and 1)
        value[...] = np.random.default_rng(len(key)).uniform(0.5, 1.5, value.shape)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((8, 2, 6, 6)), rng.standard_normal((8, 3, 6, 6))
    y, z = model.forward(a, b)
    plan = model._executor.thread_pass().plans
    whole = [p for p in plan.values() if p.batch == 8][0]
    assert whole.parts == [(0, 4), (4, 8)]
    for n in range(8):
        yn, zn = model.forward(a[n:n + 1], b[n:n + 1])
        np.testing.assert_allclose(y[n:n + 1], yn, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(z[n:n + 1], zn, rtol=1e-13, atol=1e-13)
    y2, z2 = model.forward(a * 2, b)  # the plans replayed: new data, new answers
    assert not np.allclose(y2, y)
    np.testing.assert_allclose(y2[5:], model.forward(a[5:] * 2, b[5:])[0], rtol=1e-13, atol=1e-13)
    # host=False: the whole batch's arrays, and a training-mode forward is never split
    assert model.forward(a, b, host=False)[0].shape == (8, 5)
    model.forward(a, b, training=True)
    assert all(p.parts is None for p in model._executor._plans.values())


def test_inference_is_never_split_around_a_layer_that_mixes_samples(monkeypatch):
    # A plugin's layer (here one subtracting the batch's mean) and a batch norm without running
    # statistics use the whole batch: such models run it whole, as memory_plan measures it.
    _parts_everywhere(monkeypatch)
    x = np.random.default_rng(2).standard_normal((9, 3, 4))
    mixing = model_of(BatchMean(), nc.get_layer("relu")())
    model = nc.Model(mixing.graph, seed=0, dtype="float64")
    np.testing.assert_allclose(model.forward(x), np.maximum(x - x.mean(axis=0), 0), rtol=1e-13, atol=1e-13)
    g = nc.Graph()
    g.output(g.batch_norm2d(g.input((2, 3, 3)), track_running_stats=False, name="bn"))
    x4 = np.random.default_rng(3).standard_normal((9, 2, 3, 3))
    want = (x4 - x4.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x4.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(nc.Model(g, seed=0, dtype="float64").forward(x4), want, rtol=1e-10, atol=1e-10)
    split = nc.Model(_two_in_two_out(), seed=0)
    x2 = [np.zeros((9, 2, 6, 6), np.float32), np.zeros((9, 3, 6, 6), np.float32)]
    rows = split.memory_plan(9)["rows"]
    assert rows[0]["node"].startswith("concat") and rows[0]["bytes"] == 9 * 5 * 36 * 4  # the whole batch's join
    split.forward(*x2)
    assert [p.parts for p in split._executor.thread_pass().plans.values() if p.batch == 9] == [[(0, 3), (3, 6), (6, 9)]]


def test_inference_replays_a_convolution_as_its_last_kernel_call_only_on_the_same_arrays():
    # A replayed conv2d whose last call was one kernel call makes that call again without its
    # layer's Python while its inputs are the arrays it had; new input arrays, or the same ones
    # with new contents, give their own answers (against a float64 model of the same weights).
    g = nc.Graph()
    x = g.input((3, 10, 10))
    h = g.relu(g.conv2d(x, out_channels=8, kernel_size=3, padding=1, name="c1"))
    h = g.conv2d(h, out_channels=8, kernel_size=1, name="c2")
    g.output(g.add(h, g.conv2d(x, out_channels=8, kernel_size=1, name="c3")))
    model = nc.Model(g, seed=0)
    ref = model.astype("float64")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 1, 3, 10, 10)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(model.forward(a), ref.forward(a.astype(np.float64)), rtol=1e-4, atol=1e-5)
    plan = [p for p in model._executor.thread_pass().plans.values() if p.calls][0]
    # c1, then c2 and c3 as one call at c2's step (the add's two 1x1s joined, numbacnn._joined)
    assert sum(f is not None for f in plan.fast) >= 2
    a[...] = rng.standard_normal(a.shape)  # the same array, new contents: the fast calls read them
    np.testing.assert_allclose(model.forward(a), ref.forward(a.astype(np.float64)), rtol=1e-4, atol=1e-5)
    for x_ in (b, a, b.copy()):  # other arrays: the node runs its layer again
        np.testing.assert_allclose(model.forward(x_), ref.forward(x_.astype(np.float64)), rtol=1e-4, atol=1e-5)
    model.params["c2.weight"][...] = 0.5  # weights edited in place
    ref.params["c2.weight"][...] = 0.5
    np.testing.assert_allclose(model.forward(b), ref.forward(b.astype(np.float64)), rtol=1e-4, atol=1e-5)
    for _ in range(3):  # training forwards replay their layers in full: new contents show
        b[...] = rng.standard_normal(b.shape)
        y = model.forward(b, training=True)
        np.testing.assert_allclose(y, ref.forward(b.astype(np.float64)), rtol=1e-4, atol=1e-5)
    assert all(f is None for p in model._executor._plans.values() for f in p.fast)


def test_inference_replay_runs_a_plugin_subclass_of_a_built_in_layer_in_full():
    # A plugin's subclass may work after its parent's call (here doubling linear's output): the
    # replay never repeats the parent's kernel call alone for it.
    from numbacnn.layers.linear import Linear

    class Doubled(Linear):
        name = "doubled_linear_test"

        def forward(self, ctx, x):
            y = super().forward(ctx, x)
            y *= 2
            return y

    g = nc.Graph()
    g.output(g.add_layer(Doubled(out_features=3), g.input((4,)), name="d"))
    model = nc.Model(g, seed=0)
    x = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32)
    w, bias = model.params["d.weight"], model.params["d.bias"]
    for _ in range(4):
        np.testing.assert_allclose(model.forward(x), 2 * (x @ w.T + bias), rtol=1e-5, atol=1e-6)


def test_inference_replay_of_pools_joins_views_and_linear_layers_follows_its_inputs():
    # Max pool, concat, flatten (a view), global average pool and linear make their last call
    # again on the same arrays; each answer against a model of the same seed on its first pass
    # (nothing replayed), with the same arrays given new contents and with other arrays.
    g = nc.Graph()
    x = g.input((4, 8, 8))
    a = g.max_pool2d(g.relu(g.conv2d(x, out_channels=6, kernel_size=3, padding=1, name="a")), kernel_size=2)
    b = g.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    j = g.concat(a, b)
    g.output(g.linear(g.flatten(j), out_features=5, name="fc"), g.global_avg_pool2d(j))

    def fresh(x_):
        return nc.Model(g, seed=0).forward(x_.copy())

    model = nc.Model(g, seed=0)
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((2, 3, 4, 8, 8)).astype(np.float32)
    for x_ in (x1, x1, x1, x2, x1):
        for got, want in zip(model.forward(x_), fresh(x_)):
            np.testing.assert_array_equal(got, want)
        x1[...] = rng.standard_normal(x1.shape)  # new contents, same array
    plan = [p for p in model._executor.thread_pass().plans.values() if p.calls][0]
    assert sum(f is not None for f in plan.fast) >= 6


def test_inference_parts_are_sized_by_a_samples_activations_together():
    # resnet_bottleneck's largest activation (256 KB a sample) is twice googlenet_mini's, its
    # activations together (9.1 MB) 5.6 times: parts by the sum, of 16 (the floor; the budget
    # alone gives 14) and 85-86 samples at batch 256 (by the largest activation they were 64 and
    # 128; on a busy host resnet_bottleneck ran 170.9 ms in parts of 14 against 208.0 in parts of
    # 32, /work/probe/s29/parts_c.txt).
    from numbacnn._passes import micro_batches

    def parts(name, batch=256, threads=2):
        model = nc.zoo.build(name, seed=0)
        shapes = {n: s for n, s in model.shapes.items()}
        return micro_batches(model.graph, batch, shapes, 4, threads)

    assert parts("resnet_bottleneck") == [(16 * i, 16 * i + 16) for i in range(16)]
    assert parts("resnet_bottleneck", 32) == [(0, 16), (16, 32)]
    assert parts("resnet_bottleneck", 31) is None  # under two parts of 16: whole
    assert parts("resnet_bottleneck", threads=32) == [(32 * i, 32 * i + 32) for i in range(8)]  # a sample a thread
    assert parts("googlenet_mini") == [(0, 85), (85, 170), (170, 256)]
    assert parts("vgg_small") is None and parts("lenet5") is None  # few bytes a FLOP; small
