"""numbacnn.testing.benchmark_layer: what it times, how it names the rows, and the reference check.

Most tests hand it ``Recorder``, a stand-in for pytest-benchmark's fixture that runs the timed
function a few times and notes what had been compiled when each round started; one test goes
through the real fixture (numbacnn's ``benchmark_layer``), one through pytest without
pytest-benchmark. The layer under test, ``TtScale`` (y = a * x, a learnable), calls kernels of
its own, so their compilations can be counted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.kernels import cpu_kernel, cpu_serial, prange
from numbacnn.testing import LayerCheckError
from numbacnn.testing import benchmark_layer as time_layer  # the name is also the fixture's


@cpu_kernel
def _tt_scale_forward(x, a, y):
    for i in prange(x.size):
        y[i] = a[0] * x[i]


@cpu_serial
def _tt_scale_backward(x, a, gy, gx, ga):
    # serial: every element adds into the one gradient of a
    for i in range(x.size):
        gx[i] = a[0] * gy[i]
        ga[0] += x[i] * gy[i]


KERNELS = (_tt_scale_forward, _tt_scale_backward)


class TtScale(nc.Layer):
    """y = a * x with a learnable scalar a. Any shape -> same shape."""

    name = "tt_scale"
    kernels = None  # calls this file's kernels itself

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale
        self.modes: list[tuple[bool, bool]] = []  # (training, backward expected) of each forward

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return x_shape

    def init_params(self, input_shapes: list, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"a": np.full((1,), self.scale, np.float32)}

    def flops(self, input_shapes: list, output_shape: tuple[int, ...]) -> int:
        return int(np.prod(output_shape))

    def forward_cpu(self, ctx: nc.Ctx, x: Any) -> Any:
        self.modes.append((ctx.training, ctx.backward_expected))
        y = ctx.empty_like(x)
        _tt_scale_forward(x.reshape(x.size), ctx.params["a"], y.reshape(y.size))
        ctx.save(x)
        return y

    def backward_cpu(self, ctx: nc.Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        gx = ctx.empty_like(x)
        _tt_scale_backward(x.reshape(x.size), ctx.params["a"], gy.reshape(gy.size), gx.reshape(gx.size),
                           ctx.grads["a"])
        return gx


def scale_ref(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return a[0] * x


def scale_ref_backward(gy: np.ndarray, x: np.ndarray, a: np.ndarray) -> tuple:
    return a[0] * gy, {"a": np.array([np.sum(x.astype(np.float64) * gy)])}


def compiled() -> int:
    return sum(len(k.overloads) for k in KERNELS)


class Recorder:
    """pytest-benchmark's fixture, as far as benchmark_layer uses it: runs the timed function
    ``rounds`` times; ``starts`` notes ``at_start()`` as each round begins, ``results`` what it
    returned."""

    def __init__(self, at_start: Callable[[], Any] = compiled, median: float = 1e-3) -> None:
        self.group: str | None = None
        self.extra_info: dict[str, Any] = {}
        self.stats: Any = None
        self.at_start, self.median = at_start, median
        self.starts: list[Any] = []
        self.results: list[Any] = []

    def __call__(self, fn: Callable[[], Any]) -> Any:
        return self.pedantic(fn, rounds=3)

    def pedantic(self, fn: Callable[[], Any], rounds: int, iterations: int = 1, warmup_rounds: int = 0) -> Any:
        for _ in range(rounds):
            self.starts.append(self.at_start())
            self.results.append(fn())
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=self.median))
        return self.results[-1]


def test_the_kernels_compile_before_the_timer_starts():
    # float64 is this file's only use of that signature, so nothing compiled it before
    before = compiled()
    bench = Recorder()
    time_layer(bench, TtScale(), [(2, 3, 4)], mode="forward_backward", dtype="float64")
    assert compiled() == before + 2  # the forward and backward kernels, for float64
    assert bench.starts == [before + 2] * 3  # already there when the first round started


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_peers_of_one_workload_share_a_group(mode):
    rows = {}
    for peer in ("numbacnn", "numpy"):
        bench = Recorder(median=1e-6)
        rows[peer] = time_layer(bench, TtScale(scale=3.0), [(4, 3, 5)], mode=mode, peer=peer,
                                     reference=scale_ref, reference_backward=scale_ref_backward)
        assert bench.group == rows[peer]["group"]
        assert bench.extra_info["peer"] == peer
    shown = "forward" if mode == "forward" else "forward+backward"
    assert rows["numbacnn"]["group"] == rows["numpy"]["group"] == f"tt_scale(scale=3.0) {shown} cpu 4x3x5"
    row = rows["numbacnn"]
    work = 60 if mode == "forward" else 180  # one multiply per element; a backward counts twice that
    assert (row["layer"], row["config"], row["device"], row["dtype"]) == ("tt_scale", {"scale": 3.0}, "cpu", "float32")
    assert (row["input_shapes"], row["batch"], row["flops"], row["training"]) == ([[4, 3, 5]], 4, work,
                                                                                 mode != "forward")
    assert row["gflops"] == pytest.approx(work / 1e-6 / 1e9)
    assert row["checked"] == (["y"] if mode == "forward" else ["y", "gx", "grad a"])


def test_group_and_flops_given_override_the_defaults():
    bench = Recorder()
    row = time_layer(bench, TtScale(), [(2, 6)], group="my scale", flops=1000)
    assert bench.group == row["group"] == "my scale"
    assert row["flops"] == 1000 and row["gflops"] == pytest.approx(1000 / 1e-3 / 1e9)
    assert row["checked"] == []  # no reference given


def test_forward_times_the_forward_alone_and_forward_backward_both():
    bench = Recorder()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    time_layer(bench, TtScale(), [(2, 3)], inputs=[x], params={"a": np.array([0.5], np.float32)})
    y, gx = bench.results[-1]
    assert gx is None
    np.testing.assert_array_equal(y, 0.5 * x)

    bench = Recorder()
    time_layer(bench, TtScale(), [(2, 3)], mode="forward_backward", inputs=[x], rounds=2)
    assert len(bench.results) == 2
    y, gx = bench.results[-1]
    np.testing.assert_array_equal(y, 2 * x)
    assert gx.shape == x.shape and np.abs(gx).max() > 0  # 2 * gy, gy drawn at random


@pytest.mark.parametrize("mode, training, seen", [
    ("forward", None, (False, False)),
    ("forward", True, (True, False)),
    ("forward_backward", None, (True, True)),
    ("forward_backward", False, (False, True)),
])
def test_training_mode_follows_the_mode_unless_given(mode, training, seen):
    layer = TtScale()
    time_layer(Recorder(), layer, [(2, 3)], mode=mode, training=training)
    assert layer.modes == [seen] * (2 + 3)  # two runs before the timer, three timed


def test_a_parameter_gradient_the_layer_lacks_is_refused():
    with pytest.raises(LayerCheckError, match="returned a gradient for 'b'; the layer's parameters are a"):
        time_layer(Recorder(), TtScale(), [(3, 4)], mode="forward_backward", reference=scale_ref,
                   reference_backward=lambda gy, x, a: (a[0] * gy, {"b": np.zeros(1)}))


def test_a_layer_of_several_inputs_has_a_gradient_checked_for_each():
    row = time_layer(Recorder(), nc.get_layer("add")(), [(2, 5), (2, 5)], mode="forward_backward",
                     reference=lambda a, b: a + b, reference_backward=lambda gy, a, b: (gy, gy))
    assert row["checked"] == ["y", "gx0", "gx1"] and row["group"] == "add forward+backward cpu 2x5 2x5"
    with pytest.raises(LayerCheckError, match=r"reference_backward returned 1 input gradient\(s\) for 2 input"):
        time_layer(Recorder(), nc.get_layer("add")(), [(2, 5), (2, 5)], mode="forward_backward",
                   reference=lambda a, b: a + b, reference_backward=lambda gy, a, b: gy)
    with pytest.raises(LayerCheckError, match=r"\[reference agrees\] gx1:"):
        time_layer(Recorder(), nc.get_layer("add")(), [(2, 5), (2, 5)], mode="forward_backward",
                   reference=lambda a, b: a + b, reference_backward=lambda gy, a, b: (gy, -gy))


def test_the_reference_peer_times_the_reference_on_the_same_inputs():
    seen = []

    def ref(x: np.ndarray, a: np.ndarray) -> np.ndarray:
        seen.append(x)
        return a[0] * x

    bench = Recorder()
    time_layer(bench, TtScale(), [(3, 4)], peer="numpy", reference=ref)
    assert len(seen) == 1 + 3  # once for the check, then once per round
    assert all(np.array_equal(seen[0], x) for x in seen[1:])
    np.testing.assert_array_equal(bench.results[-1], 2 * seen[0])


@pytest.mark.parametrize("wrong, what", [
    (dict(reference=lambda x, a: a[0] * x + 1e-2 * np.abs(x).max()), "y"),
    (dict(reference=lambda x, a: (a[0] * x)[:, :2]), "y"),
    (dict(reference_backward=lambda gy, x, a: (gy, {"a": np.zeros(1)})), "gx"),
    (dict(reference_backward=lambda gy, x, a: (a[0] * gy, {"a": np.zeros(1)})), "grad a"),
])
def test_a_reference_that_disagrees_fails_before_anything_is_timed(wrong, what):
    args = {"reference": scale_ref, "reference_backward": scale_ref_backward, **wrong}
    bench = Recorder()
    with pytest.raises(LayerCheckError, match=rf"\[reference agrees\] {what}:") as e:
        time_layer(bench, TtScale(), [(3, 4)], mode="forward_backward", **args)
    assert "cannot be compared" in str(e.value) or "different computations" in str(e.value)
    assert bench.starts == [] and bench.group is None


def test_a_loose_enough_rtol_accepts_a_reference_that_differs_a_little():
    bench = Recorder()
    row = time_layer(bench, TtScale(), [(3, 4)], reference=lambda x, a: a[0] * x * (1 + 1e-5), rtol=1e-4)
    assert row["checked"] == ["y"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="backward"), "mode must be one of forward, forward_backward, found 'backward'"),
    (dict(peer="numpy"), "peer 'numpy' times the reference, but no reference= was given"),
    (dict(peer="numpy", reference=scale_ref, mode="forward_backward"), "give reference_backward="),
    (dict(dtype="float16"), "dtype must be 'float32' or 'float64'"),
    (dict(input_shapes=[(3,)]), r"input_shapes must be a list of full shapes, batch first"),
    (dict(input_shapes=[(2, 3), (4, 3)]), "batch sizes differ"),
    (dict(inputs=[np.zeros((2, 2))]), r"inputs= have shapes \[\(2, 2\)\], input_shapes says \[\(3, 4\)\]"),
    (dict(params={"b": np.ones(1)}), "params= names 'b'; the layer's parameters are a"),
])
def test_bad_arguments_are_refused_before_any_compute(kwargs, message):
    bench = Recorder()
    args = {"input_shapes": [(3, 4)], **kwargs}
    with pytest.raises(ValueError, match=message):
        time_layer(bench, TtScale(), **args)
    assert bench.starts == []


def test_an_unknown_device_is_refused():
    with pytest.raises(nc.DeviceError, match="unknown device 'tpu'"):
        time_layer(Recorder(), TtScale(), [(3, 4)], device="tpu")


@pytest.mark.parametrize("peer", ["numbacnn", "numpy"])
def test_the_fixture_times_with_pytest_benchmark(benchmark_layer, peer):
    row = benchmark_layer(TtScale(), [(2, 8)], mode="forward_backward", peer=peer, reference=scale_ref,
                          reference_backward=scale_ref_backward, rounds=2)
    assert row["group"] == "tt_scale forward+backward cpu 2x8" and row["peer"] == peer


PLUGIN_TESTS = """
import numbacnn as nc
import pytest


def test_timed(benchmark_layer):
    benchmark_layer(nc.get_layer("flatten")(), [(2, 3, 4)], rounds=1)
    print("RAN test_timed")


def test_not_written(benchmark_layer):
    pytest.skip("not written yet")


def test_other():
    print("RAN test_other")
"""


@pytest.mark.parametrize("option, ran, skips", [
    # without pytest-benchmark: a clear reason
    ("-p no:benchmark", ["test_other"], {"benchmark_layer needs pytest-benchmark: pip install pytest-benchmark": 2}),
    ("", ["test_timed", "test_other"], {"not written yet": 1}),
    # pytest-benchmark's own switches see the tests that use benchmark_layer as benchmarks
    ("--benchmark-skip", ["test_other"], {"Skipping benchmark (--benchmark-skip active)": 2}),
    ("--benchmark-only", ["test_timed"], {"not written yet": 1, "Skipping non-benchmark (--benchmark-only active)": 1}),
])
def test_the_fixture_under_pytest_benchmarks_switches(tmp_path, option, ran, skips):
    (tmp_path / "test_it.py").write_text(PLUGIN_TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-s", "-rs", "-p", "no:cacheprovider", *option.split(),
                           "test_it.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},  # no worker
                               "PYTHONPATH": os.pathsep.join(sys.path)})
    out = done.stdout + done.stderr
    assert [name for name in ("test_timed", "test_other") if f"RAN {name}" in out] == ran, out
    for reason, count in skips.items():
        assert sum(int(n) for n, why in re.findall(r"SKIPPED \[(\d+)\] \S+ ?(.*)", out) if reason in why) == count, out
    assert f"{sum(skips.values())} skipped" in out and "failed" not in out and "error" not in out, out
    assert "Warning" not in out, out  # a benchmark test that skips is not one that forgot to time


def test_the_cuda_path_synchronises_inside_the_timed_call(numbacnn_cuda, monkeypatch):
    from numbacnn.device import get_backend

    backend = get_backend(numbacnn_cuda)
    synced = []
    monkeypatch.setattr(backend, "synchronize", lambda: synced.append(1))
    bench = Recorder(at_start=lambda: len(synced))
    row = time_layer(bench, nc.get_layer("relu")(), [(2, 3, 4)], mode="forward_backward", device=numbacnn_cuda,
                          reference=lambda x: np.maximum(x, 0), reference_backward=lambda gy, x: gy * (x > 0),
                          rounds=2)
    assert row["group"] == "relu forward+backward cuda 2x3x4" and row["checked"] == ["y", "gx"]
    assert bench.starts[1] == bench.starts[0] + 1 and len(synced) == bench.starts[1] + 1  # once per round
    y, gx = bench.results[-1]
    assert not isinstance(y, np.ndarray)  # timed on the device arrays, no copy to the host
