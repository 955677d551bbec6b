"""The executor's memory plan: shared inference buffers, in-place ReLU, allocation-free steps."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.device import get_backend


@pytest.fixture(scope="module")
def resnet():
    # Unfolded (NUMBACNN_FOLD_BN=0): these tests compare inference's shared buffers with a
    # gradient pass bit for bit, and folding batch norms rounds differently (tests/test_fold.py).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBACNN_FOLD_BN", "0")
        return nc.zoo.resnet_bottleneck(29, seed=0)


def test_resnet_inference_peak_is_at_most_half_of_keeping_everything(resnet):
    plan = resnet.memory_plan(batch_size=2)
    assert plan["keep_all_bytes"] == sum(r["bytes"] for r in plan["rows"])
    assert len(plan["rows"]) == len(resnet.order)
    assert plan["peak_activation_bytes"] <= 0.5 * plan["keep_all_bytes"], plan["peak_activation_bytes"]
    # Everything the arena holds, layer scratch included, also stays under half.
    assert plan["arena_bytes"] <= 0.5 * plan["keep_all_bytes"], plan["arena_bytes"]


def test_shared_buffers_give_the_same_answer(resnet):
    # One conv2d path for both passes (inference takes shifted taps where a gradient pass
    # takes im2col, which sums in another order): what is compared is the buffers.
    from numbacnn.layers.conv2d_plan import force_path

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with force_path("im2col"):
        shared = resnet.forward(x)  # inference: arena, in-place ReLU
        kept = resnet.forward(x, training=False, grad=True)  # every buffer its own
    np.testing.assert_array_equal(shared, kept)
    # The default paths (shifted taps in inference), at a batch not yet planned: as close as
    # two summation orders allow.
    x3 = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(resnet.forward(x3), resnet.forward(x3, training=False, grad=True), rtol=1e-4,
                               atol=1e-5)
    assert any(ctx.inplace for ctx in resnet._executor.ctxs.values()) is False  # grad pass: none
    resnet.forward(x)  # inference runs on the calling thread's own contexts
    assert any(ctx.inplace for ctx in resnet._executor.thread_pass().ctxs.values())


def test_repeated_inference_allocates_nothing(resnet):
    x = np.zeros((2, 3, 32, 32), np.float32)
    resnet.forward(x)
    backend = get_backend("cpu")
    before = backend.allocations
    resnet.forward(x)
    assert backend.allocations == before


def test_steady_state_training_step_allocates_no_buffers():
    model = nc.zoo.network3("conv2_relu", seed=0)
    opt = nc.optim.SGD(model, lr=0.01, momentum=0.9)
    shape = model.input_shapes[0]
    rng = np.random.default_rng(0)
    x = rng.random((8, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    backend = get_backend("cpu")

    def step():
        opt.zero_grad()
        logits = model.forward(x, training=True, host=False)
        _, gy = nc.losses.cross_entropy(logits, y)
        model.backward(gy, input_grad=False)
        opt.step()

    step()
    step()
    before = backend.allocations
    step()
    assert backend.allocations == before


def test_memory_plan_between_forward_and_backward_leaves_the_step_alone():
    model = nc.zoo.network3("conv2_relu", seed=0)
    x = np.random.default_rng(0).random((3, *model.input_shapes[0]), dtype=np.float32)
    gy = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    model.forward(x, training=True)
    gx = model.backward(gy)
    want = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    model.forward(x, training=True)
    plan = model.memory_plan(batch_size=5)
    np.testing.assert_array_equal(model.backward(gy), gx)
    for k, g in want.items():
        np.testing.assert_array_equal(model.grads[k], g)
    assert plan["arena_bytes"] == model.memory_plan(batch_size=5)["arena_bytes"]  # a fresh arena each time


def residual_model():
    g = nc.Graph()
    x = g.input((4, 6, 6))
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=4, kernel_size=3, padding=1, bias=False, name="a")))
    h = g.add(g.conv2d(h, out_channels=4, kernel_size=3, padding=1, name="b"), x)  # x fans out
    g.output(g.linear(g.flatten(h), out_features=3, name="fc"))
    return nc.Model(g, seed=0)


def test_alternating_batch_sizes_allocate_nothing_after_the_first_epoch():
    model = residual_model()
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 4, 6, 6), dtype=np.float32) for n in (64, 17)]  # a short last batch
    backend = get_backend("cpu")

    def epoch():
        for x in batches:
            model.forward(x, training=True)
            model.backward(np.ones((len(x), 3), np.float32))

    epoch()
    before = backend.allocations
    epoch()
    epoch()
    assert backend.allocations == before


def test_buffers_are_kept_for_a_few_batch_shapes_only():
    from numbacnn.layer import POOL_SHAPES

    model = residual_model()
    for n in range(1, 2 * POOL_SHAPES + 1):
        x = np.zeros((n, 4, 6, 6), np.float32)
        model.forward(x, training=True)
        model.backward(np.ones((n, 3), np.float32))
    ex = model._executor
    assert len(ex._plans) == POOL_SHAPES  # each signature's buffers and fan-out sums live in its plan
    # The training step's arena keeps only the buffers the remembered signatures use.
    arena = ex._record.arena
    assert set(arena._chunks) == set().union(*(p.bases for p in ex._plans.values()))
    model.forward(np.zeros((1, 4, 6, 6), np.float32), training=True)  # long evicted: recorded again
    assert not ex._step.ready


def test_inference_buffers_start_on_64_byte_lines():
    # Every value and scratch array the inference arena hands out starts on a 64-byte line
    # (device.ALIGN), whatever NumPy's allocations start on: vgg_small's conv1_1 at batch 256
    # ran its column matrix 16 bytes off a line in 4.08 ms against 3.26 aligned.
    from numbacnn._arena import Arena
    from numbacnn.device import ALIGN

    arena = Arena(get_backend("cpu"))
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    views = [arena.take(s, d) for s, d in (((3,), f32), ((5, 7), f32), ((1000,), f64), ((0,), f32), ((13,), f32))]
    arena.release(views[1])
    views.append(arena.take((5, 6), f32))  # a freed buffer serves a smaller request, aligned again
    assert all(v.ctypes.data % ALIGN == 0 for v in views if v.size)
    model = nc.zoo.build("lenet5", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    model.forward(x)
    model.forward(x)
    bufs = [b for ctx in model._executor.thread_pass().folds.ctxs for b in ctx._pool]
    assert len(bufs) >= 8 and all(b.ctypes.data % ALIGN == 0 for b in bufs if b.size)


@pytest.mark.parametrize("alias", ["flatten", "dropout"])
def test_in_place_relu_leaves_a_value_another_view_of_it_still_needs(alias):
    # Regression: a ReLU on a flatten view (or on dropout's identity in eval) of a conv's output ran
    # in place as the view's last reader, though the conv's output itself, the same buffer, was
    # still to be read (by the pool): the pool averaged relu'd values, 0.21 off.
    from numbacnn.layers.conv2d_plan import force_path

    g = nc.Graph()
    a = g.conv2d(g.input((4, 6, 6)), out_channels=4, kernel_size=3, padding=1, name="c")
    v = g.flatten(a, name="v") if alias == "flatten" else g.dropout(a, p=0.5, name="v")
    o1 = g.linear(g.flatten(g.relu(v, name="r")), out_features=3, name="l1")
    o2 = g.linear(g.flatten(g.global_avg_pool2d(a, name="p")), out_features=2, name="l2")
    g.output(o1, o2)
    model = nc.Model(g, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 4, 6, 6)).astype(np.float32)
    with force_path("im2col"):  # one conv path in both passes: the buffers are what differ
        for _ in range(2):  # the pass that decides, then its replay
            shared = model.forward(x)
            kept = model.forward(x, training=False, grad=True)  # every buffer its own
            for s, k in zip(shared, kept):
                np.testing.assert_array_equal(s, k)
