"""Background pre-compilation: a second process fills the disk cache while training compiles.

Numba compiles one kernel at a time per process, so a cold ``numbacnn train`` uses one core.
When ``Trainer.fit``'s first step finds a kernel missing from the cache (the first
``numba:compile`` event of a numbacnn kernel), ``start`` launches one worker process
(``python -m numbacnn._precompile``, fed the model's spec and a few samples on stdin) that compiles
the same model's kernels in another order: the optimizer update and the loss first, then
each layer alone (forward and backward) from both ends of the model inwards (last, first,
second to last, ...; ``_worker_order``), then each layer's inference forward (for the first
evaluation, after an epoch). The main process compiles its forward as it goes;
when it reaches a kernel the worker has saved, Numba loads it from the cache (the dispatcher looks at the cache at the first call of each signature), and
compiles it otherwise. A warm cache fires no compile event, so no worker starts.

The worker is only a cache filler: it runs at a lower priority, its output is discarded, any
failure ends it quietly, and it is killed when the main process no longer needs it. Numba
writes cache files and indexes atomically (a temporary file, then a rename), so the two
processes never leave a torn file; where both save a specialisation of one kernel at the same
instant, one index entry may be lost and that specialisation compiles again in a later run.
A kernel one process is compiling is not compiled by the other too: the worker names the
specialisation it is compiling (``announce``) in a file the training process gave it, and
clears the name once the cache holds it; a training process that misses the cache on that very
specialisation waits for it and loads it (``_await``) instead of starting the same compile (in
one cold ``numbacnn train``, both processes compiled conv2d's weight-gradient reduction at once:
0.8 s of the training process's own compiling). The training process names its own compiles
in a file beside it, and the worker leaves a layer that needs one of them (``_Skip``) for the
next.
By default the worker starts only when a CPU is idle (a second compiling process on a saturated
machine slows the first); ``NUMBACNN_PRECOMPILE=1`` always starts it, ``NUMBACNN_PRECOMPILE=0``
never.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import numpy as np
from numba.core import caching, event, sigutils

from ._kernel_cache import MARK
from ._parfor_link import depth

__all__ = ["start", "enabled", "on_first_compile", "worker_on_first_compile"]

ENV = "NUMBACNN_PRECOMPILE"


#: Auto mode starts the worker only when this much of a CPU is idle (one-minute load average
#: against the CPUs this process may use): on a saturated machine a second compiling process
#: only slows the first (measured: lenet5 cold train 51 s of compiling alone, 69-70 s beside a
#: worker, at a load of 7 on 2 cores).
IDLE_CPUS = 0.75


def _idle_cpus() -> float:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        return cpus - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average here (Windows)
        return cpus - 1.0


def enabled() -> bool:
    """Whether to start a worker: ``NUMBACNN_PRECOMPILE=1`` always, ``0`` never, unset (or
    ``auto``) when a CPU is idle. Never when caching is off (nothing would be kept)."""
    from ._jit import CACHE

    mode = os.environ.get(ENV, "auto").strip().lower()
    if not CACHE or mode == "0":
        return False
    return mode == "1" or _idle_cpus() >= IDLE_CPUS


def start(model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray) -> subprocess.Popen | None:
    """Launch the worker for this model (CPU only); None when it cannot start. Never raises."""
    proc: subprocess.Popen | None = None
    busy: str | None = None
    try:
        if not enabled() or model.device != "cpu":
            return None
        payload = pickle.dumps({"spec": model.to_spec(),
                                "optimizer": type(optimizer) if optimizer is not None else None,
                                "config": optimizer.config if optimizer is not None else None,
                                "loss": loss_fn, "x": np.asarray(x), "y": np.asarray(y)})
        fd, busy = tempfile.mkstemp(prefix="numbacnn-precompile-")
        os.close(fd)
        env = dict(os.environ, **{ENV: "0"})
        proc = subprocess.Popen([sys.executable, "-m", "numbacnn._precompile", busy], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
    except Exception:  # a graph that does not pickle, no process to spare: train compiles it all
        if busy is not None:
            _stop(proc, busy)
        return None
    _WORKERS.append((proc, busy))
    _install_await()
    atexit.register(_stop, proc, busy)
    return proc


#: The batch ``Trainer.fit`` evaluates at (at least): the worker runs each layer's inference
#: forward at it too.
EVAL_BATCH = 256
#: ... at most this many bytes of a layer's inputs (a background process beside training).
EVAL_BYTES = 1 << 24
#: The running workers and the files in which each names the specialisation it is compiling.
_WORKERS: list[tuple[subprocess.Popen, str]] = []
#: How long the training process waits for one specialisation the worker is compiling (s):
#: longer than any kernel compiles; past it, the training process compiles it too.
AWAIT_S = 60.0
#: Beside a worker's file, the one in which the training process names its own compile.
TRAINER = ".trainer"


def _key(py_func: Any, sig: Any) -> str | None:
    """A numbacnn kernel's specialisation as both processes name it (None for other functions)."""
    if not getattr(py_func, MARK, False):
        return None
    args, _ = sigutils.normalize_signature(sig)
    return f"{py_func.__module__}.{py_func.__qualname__}{tuple(args)}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _tmp(path: str, pid: int) -> str:
    """Where process ``pid`` writes ``path``'s next text before renaming it into place."""
    return f"{path}.{pid}"


def _write(path: str, text: str) -> None:
    tmp = _tmp(path, os.getpid())
    with contextlib.suppress(OSError):  # the training process gone, its file with it: nobody reads
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # the reader sees the old name or the new one, never half of one


class _Naming(event.Listener):
    """The specialisation this process is compiling, named in the files the other process
    reads (``paths()``): ``start`` names it; the save that ``saving`` wraps clears the name once
    the cache holds it, and a compile that fails clears it too (the other process would wait
    for it until ``AWAIT_S``)."""

    def __init__(self, paths: Callable[[], list[str]]) -> None:
        self.paths, self.current = paths, None
        event.register("numba:compile", self)

    def start(self, key: str) -> None:
        self.current = key
        for path in self.paths():
            _write(path, key)

    def clear(self) -> None:
        self.current = None
        for path in self.paths():
            _write(path, "")

    def on_start(self, ev: event.Event) -> None:
        pass

    def on_end(self, ev: event.Event) -> None:
        # the exception the compile ended with: Numba 0.68's ``Event.is_failed`` says the
        # opposite (True when there was none)
        failed = getattr(ev, "_exc_details", None) is not None
        if failed and self.current is not None and depth() == 0:
            self.clear()

    def saving(self, save: Callable[..., Any]) -> Callable[..., None]:
        def save_clearing(cache: Any, sig: Any, data: Any) -> None:
            try:
                save(cache, sig, data)
            finally:
                if self.current is not None and _key(cache._py_func, sig) == self.current:
                    self.clear()

        return save_clearing


def _install_await() -> None:
    """In the training process: a cache miss on the specialisation a live worker is compiling
    waits for the worker's cache entry; one it compiles itself it names for the workers (once
    installed, for every worker this process starts)."""
    if getattr(caching.Cache.load_overload, "_numbacnn_await", False):
        return
    load = caching.Cache.load_overload
    naming = _Naming(lambda: [busy + TRAINER for proc, busy in _WORKERS if proc.poll() is None])

    def load_or_await(self: Any, sig: Any, target_context: Any) -> Any:
        data = load(self, sig, target_context)
        if data is None and depth() == 0 and _WORKERS:
            key = _key(self._py_func, sig)
            if key is not None and _await(key):
                data = load(self, sig, target_context)
            if data is None and key is not None:  # compiled here: the workers leave it to us
                naming.start(key)
        return data

    load_or_await._numbacnn_await = True  # type: ignore[attr-defined]
    caching.Cache.load_overload = load_or_await
    caching.Cache.save_overload = naming.saving(caching.Cache.save_overload)


def _await(key: str) -> bool:
    """Wait while a live worker names ``key``; whether it did (the cache may now hold it)."""
    waited, until = False, time.monotonic() + AWAIT_S
    for proc, busy in list(_WORKERS):
        while proc.poll() is None and _read(busy) == key and time.monotonic() < until:
            waited = True
            time.sleep(0.01)
    return waited


class _Skip(Exception):
    """In the worker: the training process is compiling this specialisation; the layer that
    needs it is left to it (``_run`` goes on with the next)."""


def announce(busy: str) -> None:
    """In the worker: name each numbacnn kernel specialisation it starts compiling (a cache
    miss outside any other kernel's compile) in the file ``busy``, and clear the name once
    the cache holds that specialisation; one that the training process names (``busy`` +
    ``TRAINER``) as its own compile raises ``_Skip`` instead (a cold train: the worker, reaching
    conv2's backward while training compiled it, compiled it again past the end of training
    instead of the evaluation's pool kernels training then compiled itself)."""
    load = caching.Cache.load_overload
    naming = _Naming(lambda: [busy])

    def load_announcing(self: Any, sig: Any, target_context: Any) -> Any:
        data = load(self, sig, target_context)
        if data is None and depth() == 0:
            key = _key(self._py_func, sig)
            if key is not None:
                if _read(busy + TRAINER) == key:
                    raise _Skip(key)
                naming.start(key)
        return data

    caching.Cache.load_overload = load_announcing
    caching.Cache.save_overload = naming.saving(caching.Cache.save_overload)


class _FirstCompile(event.Listener):
    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback: Callable[[], Any] | None = callback

    def on_start(self, ev: event.Event) -> None:
        from ._compile_progress import _kernel_name

        if self.callback is not None and _kernel_name(ev.data) is not None:
            callback, self.callback = self.callback, None
            callback()

    def on_end(self, ev: event.Event) -> None:
        pass


@contextlib.contextmanager
def on_first_compile(callback: Callable[[], Any]) -> Iterator[None]:
    """Call ``callback()`` once, when the first numbacnn kernel inside the block misses the
    cache (never when every kernel loads from it)."""
    listener = _FirstCompile(callback)
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)


def worker_on_first_compile(model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray,
                            y: np.ndarray) -> contextlib.AbstractContextManager[None]:
    """Inside the block, the first numbacnn kernel that misses the cache starts the worker for
    this model (``start``); a warm cache starts none."""
    return on_first_compile(lambda: start(model, optimizer, loss_fn, x, y))


def _stop(proc: subprocess.Popen | None, busy: str) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    stale = [_tmp(busy, proc.pid)] if proc is not None else []  # a write the kill cut short
    for path in (busy, busy + TRAINER, _tmp(busy + TRAINER, os.getpid()), *stale):
        with contextlib.suppress(OSError):
            os.remove(path)


def _worker_order(order: list[str]) -> list[str]:
    """The layers from both ends inwards: last, first, second to last, second, ... The training
    process compiles forwards first to last, then backwards last to first, so the first
    layers' backwards are what it needs last and the last layers' forwards what it reaches
    last; by the time the worker gets to a first layer, its forward is in the cache."""
    names, out = list(order), []
    while names:
        out.append(names.pop())
        if names:
            out.append(names.pop(0))
    return out


def _run(job: dict[str, Any]) -> None:
    """The worker: optimizer, loss, then each layer alone, from both ends inwards (training's
    forward and backward), then each layer's inference forward in the same order."""
    from . import losses
    from ._fuse_train import passed
    from ._layer_checks import build_model
    from .model import Model

    x, y = job["x"], job["y"]
    model = Model.from_spec(job["spec"])
    if job["optimizer"] is not None:
        with contextlib.suppress(_Skip):  # the training process is compiling it
            opt = job["optimizer"](model, **job["config"])
            opt.step()
            opt.step()  # the first step differs (momentum buffer, bias correction)
    dtype = model.dtype.name
    out = np.zeros((len(x), *model.output_shape), dtype)
    with contextlib.suppress(_Skip):  # as Trainer._loss calls it (that module imports this one)
        if job["loss"] is losses.cross_entropy:
            losses.cross_entropy_counted(out, y)
        else:
            job["loss"](out, y)
    rng = np.random.default_rng(0)
    graph = model.graph
    parent = os.getppid()
    # A relu that training fuses into the layer it reads (_fuse_train) runs no forward kernel
    # of its own: that layer and its relu compile together, as the training process runs them.
    ex = model._executor
    fused = {name: graph.nodes[name].inputs[0] for (_, _, _, name), forward in zip(ex._steps, ex._forwards)
             if forward is passed}
    relu_of = {producer: relu for relu, producer in fused.items()}
    # The training step's kernels first, every layer's; then their inference forwards, which
    # the training process needs only at its first evaluation, after a whole epoch (an
    # inference path of its own, conv2d's shifted taps, compiling among them had the training
    # process compile more of its step itself: a cold ``numbacnn train`` 1.5 s slower).
    ran = []
    for name in _worker_order(model.order):
        if os.getppid() != parent:
            return  # the training process is gone (killed): nobody needs the rest
        if name in fused:
            continue  # with its producer
        node = graph.nodes[name]
        shapes = [(len(x), *model.shapes[i]) for i in node.inputs]
        first = any(graph.nodes[i].layer == "input" for i in node.inputs)
        try:
            then = graph.nodes[relu_of[name]].obj if name in relu_of else None
            one = build_model(node.obj, shapes, dtype, seed=0, then=then)
            xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
            out = one.forward(*xs, training=True, grad=True)
            one.backward(np.ones_like(out), input_grad=not first)
            ran.append((one, xs))
        except Exception:  # a layer that will not run alone, or _Skip: the main process compiles it
            continue
    for one, xs in ran:
        if os.getppid() != parent:
            return
        # at the batch fit's evaluation runs (a layer may pick a kernel by size: max_pool2d's
        # 2x2 runs its rows in parallel past PARALLEL_MIN values), then at the few samples'
        # batch, each on its own: the training process first evaluates on those few samples
        # (_fit_compile), so it compiles that kernel while this one compiles the other
        rows = min(EVAL_BATCH, max(len(xs[0]), EVAL_BYTES // max(1, sum(x[0].nbytes for x in xs))))
        for batch in ([np.resize(x, (rows, *x.shape[1:])) for x in xs], xs):
            try:
                one.forward(*batch, training=False, grad=False)
            except Exception:
                continue


def main() -> int:
    try:
        os.nice(5)  # the training process comes first on a busy machine
    except (AttributeError, OSError):
        pass
    if len(sys.argv) > 1:
        announce(sys.argv[1])
    _run(pickle.load(sys.stdin.buffer))
    if len(sys.argv) > 1:
        _write(sys.argv[1], "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
