"""The precompile handshake (numbacnn._precompile): the training process and the worker each
name the kernel specialisation they are compiling, so neither compiles what the other is
compiling. Each side runs in a fresh process (the handshake patches Numba's cache methods) with
``NUMBA_CACHE_DIR`` pointed at an empty folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

from numbacnn import _precompile

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_ENABLE_CUDASIM")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    return env

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
    env = _env(tmp_path)
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
    env = _env(tmp_path)
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
    env = _env(tmp_path)
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
    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-c", _FAILED_COMPILE, str(tmp_path / "busy"), str(tmp_path)], env=env,
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "''", done.stdout
