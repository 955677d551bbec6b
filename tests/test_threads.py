"""One BLAS thread inside numbacnn's calls, whichever Python thread makes them."""

import threading

import numpy as np
import pytest

import numbacnn as nc
from numbacnn._threads import single_thread_blas
from numbacnn.registry import unregister_layer

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    """The thread count of every BLAS library loaded (NumPy's OpenBLAS, which numbacnn's gemm
    calls, and SciPy's, which np.dot in Numba kernels calls)."""
    libs = [lc for lc in threadpoolctl.ThreadpoolController().lib_controllers if lc.user_api == "blas"]
    assert libs, "no BLAS library found to watch"
    return [lc.get_num_threads() for lc in libs]


def in_thread(fn):
    out, errors = [], []

    def body():
        try:
            out.append(fn())
        except BaseException as e:  # re-raised in the test's thread
            errors.append(e)

    t = threading.Thread(target=body, name="worker")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture
def probed_model():
    """conv2d -> a layer that records the BLAS thread counts while the model runs -> linear."""
    seen = []

    class BlasProbe(nc.Layer):
        name = "blas_probe_for_test"

        def output_shape(self, x_shape):
            return x_shape

        def forward_cpu(self, ctx, x):
            seen.append((threading.current_thread().name, blas_threads()))
            return x

        def backward_cpu(self, ctx, gy):
            return gy

    nc.register_layer(BlasProbe)
    try:
        g = nc.Graph()
        h = g.conv2d(g.input((3, 12, 12)), out_channels=16, kernel_size=3, name="conv")
        h = g.blas_probe_for_test(h)
        g.output(g.linear(g.flatten(h), out_features=5, name="fc"))
        yield nc.Model(g, seed=0), seen
    finally:
        unregister_layer("blas_probe_for_test")


def test_a_worker_threads_model_call_runs_one_blas_thread(probed_model):
    model, seen = probed_model
    x = np.random.default_rng(0).standard_normal((16, 3, 12, 12)).astype(np.float32)
    # Two BLAS threads outside numbacnn on any machine; with threadpoolctl >= 3.8 this also makes
    # the main thread OpenBLAS's "controlling thread", as a first model call in it would, and
    # threadpoolctl then ignores limits set from any other thread.
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert set(blas_threads()) == {2}
        want = model(x)
        got = in_thread(lambda: model(x))
        assert set(blas_threads()) == {2}, "the BLAS thread count outside numbacnn was not restored"
    assert [name for name, _ in seen] == ["MainThread", "worker"]
    for name, counts in seen:
        assert set(counts) == {1}, f"{name}: BLAS ran with {counts} threads inside a model call, expected 1"
    np.testing.assert_array_equal(got, want)


def test_overlapping_calls_from_two_threads_restore_the_setting():
    """Main enters, a worker enters, main leaves, the worker leaves last: the worker's exit
    restores what was there before, and both ran with one BLAS thread throughout."""
    main_in, worker_in, main_out = threading.Event(), threading.Event(), threading.Event()
    counts = {}

    def worker():
        main_in.wait()
        with single_thread_blas:
            worker_in.set()
            main_out.wait()
            counts["worker"] = blas_threads()
        return True

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        t = threading.Thread(target=worker)
        t.start()
        with single_thread_blas:
            main_in.set()
            worker_in.wait()
            counts["main"] = blas_threads()
        main_out.set()
        t.join()
        after = blas_threads()
    assert set(counts["main"]) == {1} and set(counts["worker"]) == {1}, counts
    assert set(after) == {2}, f"after both calls BLAS is left at {after} threads, expected the 2 set before"


@pytest.fixture
def numba_probe():
    """input -> a layer that records Numba's thread count in its forward and backward ->
    conv2d, and the count outside any call (two or more, else the test is skipped)."""
    numba = pytest.importorskip("numba")
    seen = []

    class NumbaProbe(nc.Layer):
        name = "numba_probe_for_test"
        kernels = None
        fail = False

        def output_shape(self, x_shape):
            return x_shape

        def forward(self, ctx, x):
            seen.append(("forward", numba.get_num_threads()))
            if NumbaProbe.fail:
                raise RuntimeError("probe failure")
            return x

        def backward(self, ctx, gy):
            seen.append(("backward", numba.get_num_threads()))
            return gy

    outside = numba.get_num_threads()
    if outside < 2:
        pytest.skip("Numba runs one thread here: nothing to tell apart")
    nc.register_layer(NumbaProbe)
    try:
        yield NumbaProbe, seen, numba, outside
    finally:
        unregister_layer("numba_probe_for_test")


def _probe_model(size):
    g = nc.Graph()
    h = g.numba_probe_for_test(g.input((2, size, size)))
    g.output(g.conv2d(h, out_channels=2, kernel_size=1, name="conv"))
    return nc.Model(g, seed=0)


@pytest.mark.parametrize("batch, size, one", [(1, 8, True), (2, 8, False), (1, 182, False)],
                         ids=["batch1-small", "batch2", "batch1-large"])
def test_a_call_too_small_for_the_pool_runs_numba_on_one_thread(numba_probe, batch, size, one):
    # 2 x 182 x 182 = 66,248 values reach PARALLEL_MIN (65,536): those keep every thread.
    probe, seen, numba, outside = numba_probe
    from numbacnn._threads import PARALLEL_MIN

    if batch == 1:
        assert (2 * size * size < PARALLEL_MIN) == one
    model = _probe_model(size)
    x = np.random.default_rng(0).standard_normal((batch, 2, size, size)).astype(np.float32)
    want = 1 if one else outside
    for _ in range(2):  # the first call records the plan, the second replays it
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y))
        model.forward(x)
    assert seen == [("forward", want), ("backward", want), ("forward", want)] * 2
    assert numba.get_num_threads() == outside, "Numba's thread count was not restored after the call"


def test_a_batch_one_inference_with_a_large_node_keeps_the_pool(numba_probe):
    # 32 x 32 x 32 values stay under PARALLEL_MIN, but the 3x3 conv's 19 MFLOP reach
    # PARALLEL_MIN_FLOPS: inference keeps every thread (the conv splits its sample over
    # them); a training step, whose kernels would not split, still runs on one.
    probe, seen, numba, outside = numba_probe
    from numbacnn._threads import PARALLEL_MIN, PARALLEL_MIN_FLOPS

    g = nc.Graph()
    g.output(g.conv2d(g.numba_probe_for_test(g.input((32, 32, 32))), out_channels=32, kernel_size=3, padding=1,
                      name="conv"))
    model = nc.Model(g, seed=0)
    assert 32 * 32 * 32 < PARALLEL_MIN <= 2 * 32 * 32 * 32
    assert model.graph.nodes["conv"].obj.flops([(32, 32, 32)], (32, 32, 32)) >= PARALLEL_MIN_FLOPS
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 32)).astype(np.float32)
    for _ in range(2):
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y))
        model.forward(x)
    assert seen == [("forward", 1), ("backward", 1), ("forward", outside)] * 2
    assert numba.get_num_threads() == outside


def test_the_thread_count_is_restored_when_a_layer_fails(numba_probe):
    probe, seen, numba, outside = numba_probe
    model = _probe_model(8)
    x = np.zeros((1, 2, 8, 8), np.float32)
    model.forward(x)
    probe.fail = True
    with pytest.raises(RuntimeError, match="probe failure"):
        model.forward(x)
    assert seen == [("forward", 1), ("forward", 1)]
    assert numba.get_num_threads() == outside
