"""One model shared by threads: concurrent inference is correct; concurrent training is refused."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc


@pytest.fixture(scope="module")
def model():
    return nc.zoo.network3("conv2_relu", seed=0)


def test_concurrent_inference_matches_single_thread(model, gather):
    rng = np.random.default_rng(0)
    xs = [rng.random((b, 1, 28, 28), dtype=np.float32) for b in (1, 2, 5, 8, 3)]
    want = [model.forward(x) for x in xs]

    def calls(i):
        return [(k, model.forward(xs[k])) for k in np.random.default_rng(i).integers(0, len(xs), 8)]

    for outcome in gather(6, calls):
        for k, y in outcome:
            # Bit for bit: every thread's call runs the same kernels with one BLAS thread.
            np.testing.assert_array_equal(y, want[k])


def test_inference_while_a_training_step_waits_for_its_backward(model, gather):
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    gy = np.ones((4, 10), np.float32)
    model.zero_grad()
    model.forward(x, training=True)
    model.backward(gy)
    want = {k: v.copy() for k, v in model.grads.items()}
    y = model.forward(x)
    model.zero_grad()
    model.forward(x, training=True)
    other = gather(3, lambda i: model.forward(x))  # inference elsewhere leaves the step alone
    model.backward(gy)
    for out in other:
        np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)
    for k, g in want.items():
        np.testing.assert_array_equal(model.grads[k], g)


def test_training_from_two_threads_is_refused(model, gather):
    x = np.random.default_rng(2).random((2, 1, 28, 28), dtype=np.float32)
    gy = np.ones((2, 10), np.float32)
    model.zero_grad()
    model.forward(x, training=True)
    model.backward(gy)
    want = {k: v.copy() for k, v in model.grads.items()}

    model.zero_grad()
    model.forward(x, training=True)  # this (main) thread's step, backward still to come
    msg = r"in thread 'worker0', but thread 'MainThread' {}.*one model per thread, or a lock"

    def clash(i):
        with pytest.raises(RuntimeError, match=msg.format("has a training forward whose backward")):
            model.forward(x, training=True)
        with pytest.raises(RuntimeError, match=msg.format("ran the forward this backward")):
            model.backward(gy)

    gather(1, clash)
    model.backward(gy)  # the refused calls changed nothing
    for k, g in want.items():
        np.testing.assert_array_equal(model.grads[k], g)
    # After the backward the step is over: another thread may train.
    gather(1, lambda i: (model.forward(x, training=True), model.backward(gy)))
    with pytest.raises(RuntimeError, match="thread 'MainThread', but thread 'worker0' ran the forward"):
        model.backward(gy)


def test_a_finished_thread_does_not_hold_the_model(model, gather):
    x = np.random.default_rng(3).random((2, 1, 28, 28), dtype=np.float32)
    gather(1, lambda i: model.forward(x, training=True))  # its backward never comes
    model.forward(x, training=True)
    model.backward(np.ones((2, 10), np.float32))


def test_concurrent_inference_under_the_workqueue_threading_layer(tmp_path):
    """workqueue aborts the process on concurrent parallel launches: numbacnn serialises them."""
    script = textwrap.dedent("""
        import threading, numba, numpy as np, numbacnn as nc
        g = nc.Graph()
        h = g.relu(g.conv2d(g.input((2, 6, 6)), out_channels=4, kernel_size=3, name="conv"))
        g.output(g.linear(g.flatten(h), out_features=3))
        model = nc.Model(g)
        x = np.random.default_rng(0).random((4, 2, 6, 6), dtype=np.float32)
        errors = []
        def run():
            try:
                for _ in range(30):
                    model.forward(x)
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=run) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(numba.threading_layer(), errors)
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    root = str(Path(nc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["workqueue", "[]"], done.stdout
