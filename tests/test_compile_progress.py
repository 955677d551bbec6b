"""First use: while kernels compile the user is told so, and only then.

The end-to-end checks run fresh processes against an empty ``NUMBA_CACHE_DIR`` (the message
appears) and then against the same, now warm, cache (it does not). The listener's own
behaviour is checked in-process with Numba's compile events fired by hand.
"""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numba.core import event

import numbacnn as nc
from numbacnn import _compile_progress as cp
from numbacnn._kernel_cache import mark_kernel

ROOT = Path(__file__).resolve().parents[1]

# A cheap model (flatten, linear, relu: a few kernels that compile in seconds) trained with
# per-epoch lines; what compiled before epoch 1 and during it is recorded.
FIT = """
import json
import numpy as np
import numbacnn as nc
from numbacnn.train import Callback
from numbacnn.warmup import compiled_kernels

class Record(Callback):
    def __init__(self):
        self.counts = []

    def on_epoch_begin(self, epoch, trainer):
        self.counts.append(len(compiled_kernels()))

    def on_epoch_end(self, epoch, logs, trainer):
        self.counts.append(len(compiled_kernels()))

g = nc.Graph()
g.output(g.linear(g.relu(g.flatten(g.input((1, 3, 3)))), out_features=4))
model = nc.Model(g, seed=0)
x = np.random.default_rng(0).standard_normal((12, 1, 3, 3)).astype(np.float32)
y = np.arange(12) % 4
record = Record()
nc.Trainer(model, nc.optim.SGD(model, lr=0.1)).fit(x, y, epochs=1, batch_size=5, validation_data=(x, y),
                                                   verbose=2, callbacks=[record])
print(json.dumps(record.counts))
"""


def _env(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_CACHE", "NUMBA_CACHE_DIR")}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return env


def _run(args, cache_dir):
    done = subprocess.run([sys.executable, *args], env=_env(cache_dir), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_layers_check_says_it_is_compiling_from_an_empty_cache_and_not_from_a_warm_one(tmp_path):
    cold = _run(["-m", "numbacnn.cli", "layers", "--check", "relu"], tmp_path / "cache")
    assert cold.stderr.startswith(cp.HEADER + "\n"), cold.stderr
    assert "  compiled relu_cpu.relu_forward [float32] (" in cold.stderr
    assert "  compiled relu_cpu.relu_backward [float64] (" in cold.stderr
    assert "Numba kernels in " in cold.stderr.splitlines()[-1]
    assert cold.stdout.splitlines()[-1] == "relu: 1 of 1 example(s) passed"

    warm = _run(["-m", "numbacnn.cli", "layers", "--check", "relu"], tmp_path / "cache")
    assert warm.stderr == "" and warm.stdout == cold.stdout


def test_fit_compiles_before_the_first_epoch_and_says_so_only_when_the_cache_is_empty(tmp_path):
    cold = _run(["-c", FIT], tmp_path / "cache")
    before, after = json.loads(cold.stdout.splitlines()[-1])
    assert before > 0 and after == before, (before, after)  # nothing compiled inside epoch 1
    assert cold.stderr.startswith(cp.HEADER + "\n"), cold.stderr
    assert "linear_cpu." in cold.stderr and "Numba kernels in " in cold.stderr

    warm = _run(["-c", FIT], tmp_path / "cache")
    assert json.loads(warm.stdout.splitlines()[-1]) == [0, 0]
    assert warm.stderr == ""


# The listener, with compile events fired by hand -------------------------------------------
class _Dispatcher:
    def __init__(self, fn):
        self.py_func = fn


def _kernel(x):
    return x


def _helper(x):
    return x


def _not_ours(x):
    return x


mark_kernel(_kernel)
mark_kernel(_helper)


def _compile(fn, seconds=0.0, inner=None):
    data = {"dispatcher": _Dispatcher(fn), "args": (np.zeros(2, np.float32), 3)}
    with event.trigger_event("numba:compile", data=data):
        if inner is not None:
            _compile(inner)
        time.sleep(seconds)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(cp, "_announced", False)


def test_a_terminal_gets_a_status_line_naming_the_kernel_and_the_time(fresh):
    out = _Terminal()
    with cp.compile_progress(stream=out):
        _compile(_not_ours)
        assert out.getvalue() == ""  # someone else's Numba function: not ours to report
        _compile(_kernel, seconds=1.2, inner=_helper)  # long enough for the status line to tick
    text = out.getvalue()
    assert text.startswith(cp.HEADER + "\n")
    assert f"compiling kernel 1: {__name__}._kernel [float32], 0 s so far" in text
    assert f"compiling kernel 1: {__name__}._kernel [float32], 1 s so far" in text  # redrawn while compiling
    assert "_helper" not in text  # compiled inside the kernel: not counted on its own
    assert re.search(r"[\r\n]compiled 1 Numba kernel in 1\.\d s \(kept in the cache for later runs\)\n$", text), text


def test_a_log_gets_a_line_per_kernel_the_header_once_and_a_summary_per_block(fresh):
    out = io.StringIO()
    with cp.compile_progress(stream=out):
        with cp.compile_progress():  # nested: the outer listener, its own summary
            _compile(_kernel)
            _compile(_helper)
        inner = out.getvalue()
        _compile(_kernel)
    lines = out.getvalue().splitlines()
    assert inner.splitlines() == lines[:4]
    assert lines[0] == cp.HEADER
    assert lines[1].startswith(f"  compiled {__name__}._kernel [float32] (")
    assert lines[2].startswith(f"  compiled {__name__}._helper [float32] (")
    assert lines[3].startswith("compiled 2 Numba kernels in ")
    assert lines[4].startswith(f"  compiled {__name__}._kernel [float32] (") and lines[5].startswith("compiled 1 Numba kernel in ")
    assert len(lines) == 6

    with cp.compile_progress(enabled=False, stream=out):
        _compile(_kernel)
    with cp.compile_progress(stream=out):
        pass  # nothing compiled: nothing said
    _compile(_kernel)  # after the last block: no listener left
    assert out.getvalue().splitlines() == lines


class _Labelled(nc.optim.SGD):
    """An optimizer its ``config`` cannot rebuild (a required argument it leaves out)."""

    def __init__(self, model, lr, label):
        super().__init__(model, lr, momentum=0.9)
        self.label = label


def _trained(verbose, tmp_path, resume_after=None, optimizer=lambda m: nc.optim.Adam(m, lr=0.01)):
    g = nc.Graph()
    x = g.input((1, 6, 6))
    h = g.batch_norm2d(g.conv2d(x, out_channels=3, kernel_size=3, bias=False), name="bn")
    h = g.dropout(g.relu(h), p=0.3)
    g.output(g.linear(g.flatten(h), out_features=3))
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((20, 1, 6, 6)).astype(np.float32)
    ys = rng.integers(0, 3, 20)

    def trainer():
        model = nc.Model(g, seed=3)
        return nc.Trainer(model, optimizer(model), seed=5)

    t = trainer()
    path = tmp_path / f"ck-{verbose}-{resume_after}.npz"
    if resume_after is not None:
        t.fit(xs, ys, epochs=resume_after, batch_size=6, validation_data=(xs, ys), verbose=verbose, checkpoint=path)
        t = trainer()
    t.fit(xs, ys, epochs=3, batch_size=6, validation_data=(xs, ys), verbose=verbose, checkpoint=path,
          resume=resume_after is not None)
    return t


def _state(t):
    return {**t.model.state(), **{f"optim/{k}": v for k, v in t.optimizer.state_dict().items()},
            "rng": json.dumps(t.model.rng_state(), sort_keys=True), "history": json.dumps(t.history.history)}


def test_compiling_before_the_first_epoch_leaves_training_bit_identical(tmp_path, capsys):
    quiet = _state(_trained(0, tmp_path))
    for shown in (_state(_trained(2, tmp_path)), _state(_trained(2, tmp_path, resume_after=1))):
        assert shown.keys() == quiet.keys()
        for key, value in quiet.items():
            assert np.array_equal(shown[key], value), key
    assert "epoch 3/3" in capsys.readouterr().out

    labelled = lambda m: _Labelled(m, 0.05, "mine")  # noqa: E731
    quiet, shown = (_state(_trained(v, tmp_path, optimizer=labelled)) for v in (0, 2))
    assert all(np.array_equal(shown[key], value) for key, value in quiet.items())
