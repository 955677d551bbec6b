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


def test_a_worker_that_cannot_start_is_no_error(monkeypatch):
    from numbacnn import _jit

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


_AWAIT_MODULE = '''
import numpy as np
from numbacnn._jit import cpu_kernel, prange


@cpu_kernel
def scaled(x, out):
    for i in prange(x.shape[0]):
        out[i] = 3.0 * x[i] + 1.0


@cpu_kernel
def ready(x):
    for i in prange(x.shape[0]):
        x[i] = 0.0
'''

# The worker's side: names each kernel specialisation it compiles, as the real worker does.
_AWAIT_WORKER = '''
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from numbacnn import _precompile
_precompile.announce(sys.argv[1])
import await_kernels
x = np.arange(6.0); out = np.empty_like(x)
await_kernels.scaled(x, out)
'''

# The training process's side: starts that worker, waits until it names the kernel, then
# calls the same kernel itself; reports whether it compiled it and what the file said.
_AWAIT_TRAINER = '''
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
import numpy as np
from numba.core import event
from numbacnn import _precompile
import await_kernels
await_kernels.ready(np.ones(3))  # Numba's target context made before the worker starts
compiled = []
class Seen(event.Listener):
    def on_start(self, ev): compiled.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev): pass
event.register("numba:compile", Seen())
busy = sys.argv[1]
proc = subprocess.Popen([sys.executable, "-c", sys.argv[3], busy, sys.argv[2]])
_precompile._WORKERS.append((proc, busy))
_precompile._install_await()
named = ""
while not named and proc.poll() is None:
    named = _precompile._read(busy)
    time.sleep(0.002)
x = np.arange(6.0); out = np.empty_like(x)
await_kernels.scaled(x, out)
print(json.dumps({"named": named, "compiled": compiled, "out": out.tolist(), "worker": proc.wait(),
                  "after": _precompile._read(busy)}))
'''


def test_the_training_process_loads_what_the_worker_is_compiling(tmp_path):
    # Both processes compiled the same specialisation at once (conv2d's weight-gradient
    # reduction, 0.8 s of a cold train): now the training process waits for the worker's.
    (tmp_path / "await_kernels.py").write_text(_AWAIT_MODULE)
    busy = tmp_path / "busy"
    busy.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", _AWAIT_TRAINER, str(busy), str(tmp_path), _AWAIT_WORKER],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["named"].startswith("await_kernels.scaled(Array(float64, 1, 'C'"), report
    assert report["compiled"] == [], report  # loaded from the worker's cache entry
    assert report["out"] == [1.0, 4.0, 7.0, 10.0, 13.0, 16.0]
    assert report["worker"] == 0 and report["after"] == "", report


def test_await_gives_up_when_the_worker_is_gone(tmp_path, monkeypatch):
    busy = tmp_path / "busy"
    busy.write_text("k(int64,)")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    monkeypatch.setattr(_precompile, "_WORKERS", [(proc, str(busy))])
    assert not _precompile._await("k(int64,)")  # a dead worker's name: no wait at all
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.setattr(_precompile, "_WORKERS", [(live, str(busy))])
        monkeypatch.setattr(_precompile, "AWAIT_S", 0.2)
        assert not _precompile._await("other(int64,)")  # another specialisation: no wait
        assert _precompile._await("k(int64,)")  # named and alive: waits, up to AWAIT_S
    finally:
        live.kill()
        live.wait()


# The training process names its own compile beside the worker's file, and the worker leaves
# a layer that needs that kernel (_Skip) instead of compiling it too.
_SKIP_RUN = '''
import json, subprocess, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from numba.core import event
from numbacnn import _precompile
import await_kernels
busy = sys.argv[1]
seen = []
class During(event.Listener):
    def on_start(self, ev): seen.append(_precompile._read(busy + _precompile.TRAINER))
    def on_end(self, ev): pass
event.register("numba:compile", During())
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
_precompile._WORKERS.append((worker, busy))
_precompile._install_await()
x = np.arange(6.0); out = np.empty_like(x)
await_kernels.scaled(x, out)
after = _precompile._read(busy + _precompile.TRAINER)
worker.kill(); worker.wait()
_precompile._WORKERS.clear()
# now as the worker: the training process names `ready`'s specialisation
_precompile._write(busy + _precompile.TRAINER, _precompile._key(await_kernels.ready.py_func, (await_kernels.numba.typeof(x),)))
_precompile.announce(busy)
try:
    await_kernels.ready(x)
    skipped = False
except _precompile._Skip:
    skipped = True
print(json.dumps({"during": seen[:1], "after": after, "skipped": skipped, "ready": x.tolist()}))
'''


def test_the_worker_leaves_what_the_training_process_is_compiling(tmp_path):
    (tmp_path / "await_kernels.py").write_text(_AWAIT_MODULE + "\nimport numba\n")
    busy = tmp_path / "busy"
    busy.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", _SKIP_RUN, str(busy), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["during"][0].startswith("await_kernels.scaled(Array(float64, 1, 'C'"), report
    assert report["after"] == "", report  # cleared once cached
    assert report["skipped"] and report["ready"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], report  # not run


_ALL_SKIPPED = '''
import sys
import numpy as np
import numbacnn as nc
from numbacnn import _precompile, losses
class Anything(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
_precompile._read = lambda path: Anything()  # the training process compiling every kernel
_precompile.announce(sys.argv[1])
g = nc.Graph()
g.output(g.linear(g.relu(g.input((5,))), out_features=3))
model = nc.Model(g)
opt = nc.optim.SGD(model, lr=0.1, momentum=0.9)
x = np.ones((4, 5), np.float32); y = np.arange(4) % 3
_precompile._run({"spec": model.to_spec(), "optimizer": type(opt), "config": opt.config,
                  "loss": losses.cross_entropy, "x": x, "y": y})
print("done")
'''


def test_a_worker_that_leaves_everything_to_training_ends_cleanly(tmp_path):
    # The optimizer's update and the loss ran outside the per-layer guard: a _Skip there (the
    # training process compiling the same update) ended the worker with an exception.
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", _ALL_SKIPPED, str(tmp_path / "busy")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-3000:]


_BROKEN_MODULE = '''
from numbacnn._jit import cpu_kernel


@cpu_kernel
def broken(x):
    x[0] = "text"  # a typing error
'''

_FAILED_COMPILE = '''
import sys
import numba, numpy as np
from numbacnn import _precompile
busy = sys.argv[1]
sys.path.insert(0, sys.argv[2])
_precompile.announce(busy)
import broken_kernels
try:
    broken_kernels.broken(np.zeros(2))
except numba.core.errors.TypingError:
    pass
print(repr(_precompile._read(busy)))
'''


def test_a_failed_compile_clears_its_name(tmp_path):
    # Only a save cleared it: the training process would wait AWAIT_S for a kernel that failed.
    (tmp_path / "busy").write_text("")
    (tmp_path / "broken_kernels.py").write_text(_BROKEN_MODULE)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", _FAILED_COMPILE, str(tmp_path / "busy"), str(tmp_path)], env=env,
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "''", done.stdout
