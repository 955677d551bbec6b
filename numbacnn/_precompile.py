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
from typing import Any, Callable, Iterator

import numpy as np
from numba.core import event

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
    try:
        if not enabled() or model.device != "cpu":
            return None
        payload = pickle.dumps({"spec": model.to_spec(),
                                "optimizer": type(optimizer) if optimizer is not None else None,
                                "config": optimizer.config if optimizer is not None else None,
                                "loss": loss_fn, "x": np.asarray(x), "y": np.asarray(y)})
        env = dict(os.environ, **{ENV: "0"})
        proc = subprocess.Popen([sys.executable, "-m", "numbacnn._precompile"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
    except Exception:  # a graph that does not pickle, no process to spare: train compiles it all
        return None
    atexit.register(_stop, proc)
    return proc


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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


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
        opt = job["optimizer"](model, **job["config"])
        opt.step()
        opt.step()  # the first step differs (momentum buffer, bias correction)
    dtype = model.dtype.name
    out = np.zeros((len(x), *model.output_shape), dtype)
    # as Trainer._loss calls it (that module imports this one)
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
        except Exception:  # a layer that will not run alone: the main process compiles it
            continue
    for one, xs in ran:
        if os.getppid() != parent:
            return
        try:
            one.forward(*xs, training=False, grad=False)
        except Exception:
            continue


def main() -> int:
    try:
        os.nice(5)  # the training process comes first on a busy machine
    except (AttributeError, OSError):
        pass
    _run(pickle.load(sys.stdin.buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
