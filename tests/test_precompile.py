"""Background pre-compilation (numbacnn._precompile): on a cold cache ``Trainer.fit`` starts one
worker process that fills the cache; a warm cache starts none; ``NUMBACNN_PRECOMPILE=0`` turns it
off; a worker that fails never touches training. Cache checks run in fresh processes with
``NUMBA_CACHE_DIR`` pointed at an empty folder."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _precompile

ROOT = Path(__file__).resolve().parents[1]

# fit as `numbacnn train` runs it (verbose, validation data); reports the workers started, how
# each ended, and what this process compiled.
FIT = """
import json, os, subprocess
import numpy as np
import numbacnn as nc
from numbacnn import _precompile
from numbacnn.warmup import compiled_kernels
calls = []
start = _precompile.start
def recording(*args, **kwargs):
    proc = start(*args, **kwargs)
    calls.append(proc)
    return proc
_precompile.start = recording
g = nc.Graph()
if os.environ.get("GRAPH") == "_relu_fused":  # the tests' graphs of that name
    g.output(g.linear(g.relu(g.batch_norm1d(g.linear(g.input((5,)), out_features=4))), out_features=3))
else:
    g.output(g.linear(g.relu(g.input((5,))), out_features=3))
model = nc.Model(g)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 5)).astype(np.float32)
y = np.arange(16) % 3
trainer = nc.Trainer(model, nc.optim.SGD(model, lr=0.1, momentum=0.9))
trainer.fit(x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=VERBOSE)
codes = [None if p is None else p.wait(timeout=300) for p in calls]
print(json.dumps({"calls": len(calls), "codes": codes, "compiled": compiled_kernels()}))
"""


def _fit(cache_dir, verbose=2, stderr=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM", "NUMBA_CACHE_DIR", _precompile.ENV)}
    env.update(NUMBA_CACHE_DIR=str(cache_dir), **extra)
    done = subprocess.run([sys.executable, "-c", FIT.replace("VERBOSE", str(verbose))], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    if stderr is not None:
        stderr.append(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cold_cache_starts_one_worker_and_a_warm_one_none(tmp_path):
    cold = _fit(tmp_path / "cache", NUMBACNN_PRECOMPILE="1")
    assert cold["calls"] == 1 and cold["codes"] == [0], cold  # it started, and did its work
    assert cold["compiled"], cold  # the cache was cold for this process too
    warm = _fit(tmp_path / "cache", NUMBACNN_PRECOMPILE="1")
    assert warm == {"calls": 0, "codes": [], "compiled": []}  # no worker, nothing compiled


def test_a_silent_fit_starts_the_worker_too(tmp_path):
    # verbose=0 (`numbacnn train --quiet`) compiled in one process before: lenet5 from an empty
    # cache took 19.4-20.7 s quiet against 11.8 s shown.
    err = []
    cold = _fit(tmp_path / "cache", verbose=0, stderr=err, NUMBACNN_PRECOMPILE="1")
    assert cold["calls"] == 1 and cold["codes"] == [0], cold
    assert "compiling" not in err[0], err[0]  # and it stays silent


def _relu_first():
    g = nc.Graph()
    g.output(g.linear(g.relu(g.input((5,))), out_features=3))
    return g


def _relu_fused():  # training fuses the relu into the batch norm: no relu forward runs
    g = nc.Graph()
    g.output(g.linear(g.relu(g.batch_norm1d(g.linear(g.input((5,)), out_features=4))), out_features=3))
    return g


@pytest.mark.parametrize("graph", [_relu_first, _relu_fused])
def test_the_worker_alone_fills_the_cache_train_needs(graph, tmp_path):
    """What the worker compiles (layers one by one, from both ends inwards) is what fit then
    loads; a relu that training fuses into the layer before it compiles nothing there."""
    g = graph()
    model = nc.Model(g)
    opt = nc.optim.SGD(model, lr=0.1, momentum=0.9)
    payload = pickle.dumps({"spec": model.to_spec(), "optimizer": type(opt), "config": opt.config,
                            "loss": nc.losses.cross_entropy, "x": np.zeros((4, 5), np.float32),
                            "y": np.arange(4) % 3})
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_CACHE_DIR")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-m", "numbacnn._precompile"], input=payload, env=env, cwd=ROOT,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    forwards = [p.name for p in (tmp_path / "cache").rglob("*relu_cpu.relu_forward*")]
    assert bool(forwards) == (graph is _relu_first), forwards  # its backward runs either way
    after = _fit(tmp_path / "cache", NUMBACNN_PRECOMPILE="1", GRAPH=graph.__name__)
    assert after == {"calls": 0, "codes": [], "compiled": []}


def test_worker_order_takes_both_ends_inwards():
    # lenet5 from an empty cache (numbacnn train, 2 cores, worker on, three alternating runs
    # each): 16.7-21.7 s (median 18.4) against 21.8-23.5 s (22.9) last to first, the worker
    # compiling conv1's backward while training compiled conv2's instead of both doing conv2's.
    assert _precompile._worker_order([]) == []
    assert _precompile._worker_order(["a"]) == ["a"]
    assert _precompile._worker_order(list("abcde")) == list("eadbc")
    assert sorted(_precompile._worker_order(list("abcdef"))) == list("abcdef")


def test_opt_out_starts_no_worker(tmp_path):
    off = _fit(tmp_path / "cache", NUMBACNN_PRECOMPILE="0")
    assert off["calls"] == 1 and off["codes"] == [None], off  # asked on the first compile, declined
    assert off["compiled"]


def test_enabled_follows_the_environment_and_the_cache(monkeypatch):
    from numbacnn import _jit

    monkeypatch.setattr(_jit, "CACHE", True)
    monkeypatch.delenv(_precompile.ENV, raising=False)
    monkeypatch.setattr(_precompile, "_idle_cpus", lambda: 1.0)
    assert _precompile.enabled()  # auto, a CPU idle
    monkeypatch.setattr(_precompile, "_idle_cpus", lambda: -5.0)
    assert not _precompile.enabled()  # auto, a saturated machine
    monkeypatch.setenv(_precompile.ENV, "1")
    assert _precompile.enabled()  # forced
    monkeypatch.setenv(_precompile.ENV, "0")
    monkeypatch.setattr(_precompile, "_idle_cpus", lambda: 8.0)
    assert not _precompile.enabled()  # opted out
    monkeypatch.setenv(_precompile.ENV, "1")
    monkeypatch.setattr(_jit, "CACHE", False)
    assert not _precompile.enabled()  # nothing would be kept


def _small():
    g = nc.Graph()
    g.output(g.linear(g.input((5,)), out_features=3))
    model = nc.Model(g)
    return model, nc.optim.SGD(model, lr=0.1)


def test_a_worker_that_cannot_start_is_no_error(monkeypatch, tmp_path):
    import tempfile

    from numbacnn import _jit

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where start makes the worker's file
    monkeypatch.setattr(_jit, "CACHE", True)
    monkeypatch.setenv(_precompile.ENV, "1")
    model, opt = _small()
    x, y = np.zeros((4, 5), np.float32), np.arange(4) % 3
    # a loss that does not pickle
    assert _precompile.start(model, opt, lambda a, b: (0.0, a), x, y) is None

    def no_process(*args, **kwargs):
        raise OSError("no process to spare")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert _precompile.start(model, opt, nc.losses.cross_entropy, x, y) is None
    assert os.listdir(tmp_path) == []  # the file made for the worker that did not start is gone


def test_a_failing_worker_ends_quietly_and_fit_trains_on(monkeypatch, tmp_path):
    """A worker whose model cannot be rebuilt (an unknown layer) exits non-zero; training runs."""
    from numbacnn import _jit

    monkeypatch.setattr(_jit, "CACHE", True)
    monkeypatch.setenv(_precompile.ENV, "1")
    model, opt = _small()
    spec = model.to_spec()
    spec["graph"]["nodes"][-1]["layer"] = "no_such_layer"
    monkeypatch.setattr(type(model), "to_spec", lambda self: spec)
    proc = _precompile.start(model, opt, nc.losses.cross_entropy, np.zeros((4, 5), np.float32), np.arange(4) % 3)
    assert proc is not None
    assert proc.wait(timeout=300) != 0
    x, y = np.ones((8, 5), np.float32), np.arange(8) % 3
    history = nc.Trainer(model, opt).fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history["loss"][-1])
