"""The conformance kit catches what it promises to: each broken layer below has one bug.

The layers are NumPy-only where the bug is not about kernels, so the file compiles little; the
race needs a real prange kernel.
"""

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import numbacnn as nc
from numbacnn._jit import cpu_kernel, prange
from numbacnn.cli import main
from numbacnn.testing import LayerCheckError, check_installed_layer, check_layer


class Scale(nc.Layer):
    """y = w * x with a learnable scalar w. Any shape -> same shape. Correct."""

    name = "scale"

    def __init__(self, w: float = 1.5) -> None:
        self.w = w

    def output_shape(self, x_shape):
        return x_shape

    def init_params(self, input_shapes, rng):
        return {"w": np.full((1,), self.w, np.float32)}

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        np.multiply(x, ctx.params["w"][0], out=y)
        ctx.save(x)
        return y

    def backward_cpu(self, ctx, gy):
        (x,) = ctx.saved
        ctx.grads["w"] += np.sum(gy * x)
        if not ctx.needs_input_grad[0]:
            return None
        gx = ctx.empty_like(x)
        np.multiply(gy, ctx.params["w"][0], out=gx)
        return gx


def scale_ref(x, w):
    return w[0] * x


SHAPE = [(2, 3, 4)]


def caught(layer, shapes=SHAPE, reference=scale_ref, **kwargs) -> str:
    with pytest.raises(LayerCheckError) as e:
        check_layer(layer, shapes, reference, cuda=False, **kwargs)
    return str(e.value)


def test_a_correct_layer_passes_every_check():
    report = check_layer(Scale(), SHAPE, scale_ref, cuda=False)
    assert "gradients vs finite differences (float64)" in report["checks"]
    assert "float32 in, float32 out" in report["checks"]
    assert any(c.startswith("1 thread vs") for c in report["checks"]) or numba.get_num_threads() < 2
    assert report["fd_max_abs"] < 1e-6


def test_catches_a_wrong_parameter_gradient_and_says_where_and_by_how_much():
    class WrongGrad(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += 2 * np.sum(gy * x)  # the bug: a factor 2
            if not ctx.needs_input_grad[0]:
                return None
            gx = ctx.empty_like(x)
            np.multiply(gy, ctx.params["w"][0], out=gx)
            return gx

    msg = caught(WrongGrad())
    assert msg.startswith("check_layer(scale) [gradients vs finite differences (float64)] "
                          "WrongGrad(w=1.5) on input shapes (2, 3, 4): parameter 'w' at index (0,): analytic ")
    analytic, fd = (float(msg.split(word)[1].split()[0].rstrip(",")) for word in ("analytic ", "finite difference "))
    assert analytic == pytest.approx(2 * fd)
    assert "(diff " in msg


def test_catches_a_wrong_input_gradient():
    class WrongInputGrad(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += np.sum(gy * x)
            if not ctx.needs_input_grad[0]:
                return None
            gx = ctx.empty_like(x)
            gx[...] = gy  # the bug: forgets w
            return gx

    assert "[gradients vs finite differences (float64)]" in caught(WrongInputGrad())
    assert ": input 0 at index (" in caught(WrongInputGrad())


def test_catches_a_float64_leak_in_a_gradient():
    class Leak(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += np.sum(gy * x)
            if not ctx.needs_input_grad[0]:
                return None
            return gy * np.float64(ctx.params["w"][0])  # the bug: a NumPy float64 promotes

    assert "[float32 in, float32 out]" in caught(Leak()) and "input 0 gradient is float64" in caught(Leak())


def test_catches_a_float64_leak_in_forward_and_in_scratch_buffers():
    class LeakyForward(Scale):
        def forward_cpu(self, ctx, x):
            ctx.save(x)
            return x * np.float64(ctx.params["w"][0])

    msg = caught(LeakyForward())
    assert "[float32 in, float32 out]" in msg and "forward returned float64" in msg

    class LeakyScratch(Scale):
        def forward_cpu(self, ctx, x):
            tmp = ctx.empty(x.shape, np.float64)  # the bug: a float64 scratch in a float32 model
            np.multiply(x, ctx.params["w"][0], out=tmp)
            y = ctx.empty_like(x)
            y[...] = tmp
            ctx.save(x)
            return y

    assert "allocated a float64 buffer of shape (2, 3, 4)" in caught(LeakyScratch())


@cpu_kernel
def racy_decay_forward(x, y):
    # Deliberately wrong: y[i] = y[i-1] / 2 + f(x[i]) is a recurrence, and prange hands
    # y[i-1] of each chunk boundary to another thread, which may not have written it yet. The
    # slow f makes each chunk long, so a later thread reads before the earlier one is done.
    half = x.dtype.type(0.5)
    for i in prange(x.size):
        v = x[i]
        for _ in range(400):
            v = v * half + half * x[i]
        prev = y[i - 1] if i > 0 else x.dtype.type(0)
        y[i] = half * prev + v


class RacyDecay(nc.Layer):
    """A recurrence along the flattened input, parallelised with prange: a race."""

    name = "racy_decay"

    def output_shape(self, x_shape):
        return x_shape

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        racy_decay_forward(x.reshape(-1), y.reshape(-1))
        return y

    def backward_cpu(self, ctx, gy):
        return ctx.zeros_like(gy)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="a race needs two Numba threads")
def test_catches_a_prange_race():
    msg = caught(RacyDecay(), [(2, 3, 64, 64)], reference=None)
    assert f"[1 thread vs {numba.get_num_threads()} threads (a prange race?)]" in msg
    assert "output:" in msg and "elements differ" in msg


def test_catches_a_missing_backward():
    class NoBackward(nc.Layer):
        name = "no_backward"

        def output_shape(self, x_shape):
            return x_shape

        def forward_cpu(self, ctx, x):
            return x

    assert "[contract] NoBackward() on input shapes (2, 3, 4): method backward_cpu() is missing" in \
        caught(NoBackward(), reference=None)

    class HalfCuda(Scale):
        def forward_cuda(self, ctx, x):
            return x

    assert "forward_cuda() and backward_cuda() must come together" in caught(HalfCuda())


def test_catches_a_backward_that_returns_no_input_gradient():
    class NoInputGrad(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += np.sum(gy * x)
            return None  # the bug: the input gradient was asked for

    # The executor refuses it on the first backward, naming the node and the input.
    message = caught(NoInputGrad())
    assert "[forward and backward run]" in message
    assert "backward returned None for input 0 ('x0'), whose gradient was asked for" in message


def test_catches_contract_breaches_in_direct_calls():
    class Assigns(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"][...] = np.sum(gy * x)  # the bug: = instead of +=
            if not ctx.needs_input_grad[0]:
                return None
            gx = ctx.empty_like(x)
            np.multiply(gy, ctx.params["w"][0], out=gx)
            return gx

    assert "gradient of parameter 'w' is not added into ctx.grads" in caught(Assigns())

    class Overwrites(Scale):
        def forward_cpu(self, ctx, x):
            np.multiply(x, ctx.params["w"][0], out=x)  # the bug: writes into its input
            ctx.save(x)
            return x

    assert "forward wrote into input 0" in caught(Overwrites(), reference=None)

    class Wasteful(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += np.sum(gy * x)
            return gy * ctx.params["w"][0]  # the bug: ignores ctx.needs_input_grad

    assert "which ctx.needs_input_grad did not ask for" in caught(Wasteful())


def test_catches_reads_of_unwritten_memory():
    class Unwritten(Scale):
        def backward_cpu(self, ctx, gy):
            (x,) = ctx.saved
            ctx.grads["w"] += np.sum(gy * x)
            if not ctx.needs_input_grad[0]:
                return None
            gx = ctx.empty_like(x)
            gx += gy * ctx.params["w"][0]  # the bug: adds into an uninitialised buffer
            return gx

    msg = caught(Unwritten())
    assert "[no reads of unwritten memory]" in msg and "input 0 gradient holds NaN for finite inputs" in msg


def test_catches_a_wrong_forward_a_bad_config_and_missing_shape_errors():
    class Off(Scale):
        def forward_cpu(self, ctx, x):
            y = super().forward_cpu(ctx, x)
            y[0, 0, 0] += 1
            return y

    msg = caught(Off(), threads=False)
    assert "[forward vs reference (float64)]" in msg and "1 of 24 elements differ; worst at index (0, 0, 0)" in msg
    assert "[spec round trip]" in caught(Scale(w=np.float32(2.0)))
    assert "[shape errors]" in caught(Scale(), bad_shapes=[([(2, 3)], "expected")])
    assert "[contract]" in caught(Scale(), [(2, 3), (2, 3)])


def test_check_installed_layer_runs_declared_examples_and_reports_failures():
    class Declared(Scale):
        @classmethod
        def examples(cls):
            return [{"config": {"w": 0.5}, "input_shapes": [(2, 5)], "reference": scale_ref}]

    report = check_installed_layer(Declared)
    assert report.passed, "\n".join(report)
    assert report[0].startswith("scale: ") and "(not registered)" in report[0]
    assert report[1].startswith("PASS  Declared(w=0.5) on (2, 5): ")
    assert report[-1] == "scale: 1 of 1 example(s) passed"

    class Broken(Declared):
        def backward_cpu(self, ctx, gy):
            return None

    report = check_installed_layer(Broken)
    assert not report.passed and report[1].startswith("FAIL  check_layer(scale) [")

    class BadExamples(Scale):
        @classmethod
        def examples(cls):
            return [{"input_shapes": [(2, 5)], "tolerance": 1}]

    report = check_installed_layer(BadExamples)
    assert not report.passed and "unknown key(s) tolerance" in report[1]


def test_layers_check_command(capsys):
    assert main(["layers", "--check", "relu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("relu: numbacnn.layers.relu:ReLU from numbacnn ")
    assert out[1].startswith("PASS  ReLU() on (2, 3, 5, 5): ")
    assert main(["layers", "--check", "relux"]) == 2
    assert "No layer 'relux'. Did you mean 'relu'" in capsys.readouterr().err


PLUGIN_TEST = textwrap.dedent('''
    import numpy as np

    import numbacnn as nc


    class Double(nc.Layer):
        name = "double"

        def output_shape(self, x_shape):
            return x_shape

        def forward_cpu(self, ctx, x):
            return x * x.dtype.type(2)

        def backward_cpu(self, ctx, gy):
            return gy * gy.dtype.type(2)


    def test_cpu(check_layer):
        check_layer(Double(), [(2, 3)], lambda x: 2 * x, cuda=False)


    def test_gpu(numbacnn_cuda, check_layer):
        check_layer(Double(), [(2, 3)], lambda x: 2 * x, cuda=True, threads=False)
''')


def test_pytest_plugin_gives_fixtures_and_the_cuda_marker(tmp_path):
    (tmp_path / "test_kit.py").write_text(PLUGIN_TEST)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM" and not k.startswith("PYTEST_XDIST")}

    def pytest_run(*args):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args,
               str(tmp_path)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120).stdout

    out = pytest_run("-m", "not cuda")
    assert "1 passed, 1 deselected" in out, out
    if not nc.device.cuda_available():
        out = pytest_run("-rs")
        assert "1 passed, 1 skipped" in out and "NUMBA_ENABLE_CUDASIM is not set" in out, out
