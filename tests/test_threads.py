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
