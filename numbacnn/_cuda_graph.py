"""CUDA graphs: the kernel launches of one forward or backward of an input signature, captured
once and replayed with a single launch.

Why: numba-cuda spends 15-22 us of Python on every kernel launch (an H200, numba-cuda 0.30.4:
15.7 us with one array argument, 21.7 us with four), so a small net's training step is bound
by its 30 or so launches, not by the GPU. On the same machine a captured graph of 100 launches
replayed in 110 us against 1,690 us launched one by one.

How: ``capture(fn)`` runs ``fn`` with every ``cuda_kernel`` launch of the calling thread sent
to a stream of ours that the driver captures (relaxed mode) instead of running it
(``_jit.ROUTE``); ``fn``'s Python runs once, its launches become the graph's nodes. The graph
holds the device pointers the launches were given, so the arrays are kept with it, and its
user must put each call's inputs into the same buffers (``Graph.launch`` replays exactly what
was captured). Our stream is a non-blocking one, so that other threads may go on using the
default stream while this one captures (a blocking stream's capture makes every legacy-stream
call in the process fail); a replay is ordered with the default stream, where copies and eager
launches go, by events: it waits for what was queued there before, and what is queued there
after waits for it. So everything a captured call does on the device must be a
``cuda_kernel`` launch or a ``_cublas`` product: a copy a layer made on the default stream
would run once at capture and be missing from the graph (layers never copy; the layer
contract says so).

A capture the driver refuses (a host copy or a synchronisation inside ``fn``, a launch on
another stream) raises inside ``fn``; ``capture`` ends the capture and re-raises, and the
caller runs the call without a graph from then on (``warn_once`` says why).

Under Numba's simulator there is no driver to capture: ``capture`` records the launches
(kernel, configuration, arguments) and ``launch`` runs them again in order, which is what a
replayed graph does, so the code that uses graphs is tested without a GPU.

Graphs are on by default on a real GPU (``NUMBACNN_CUDA_GRAPHS=0`` turns them off): on an H200
the CUDA tests pass with and without them, and network3's training step took 0.70-1.0 ms with
them against 2.8-4.1 ms without (README, GPU). Under the simulator they run when asked
(``NUMBACNN_CUDA_GRAPHS=1``), so that the tests choose which way each model runs.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

from . import _jit

__all__ = ["enabled", "capture", "warn_once"]

ENV = "NUMBACNN_CUDA_GRAPHS"
_local = threading.local()
_warned: set[str] = set()


def enabled() -> bool:
    """Whether models on CUDA replay their calls as CUDA graphs: ``NUMBACNN_CUDA_GRAPHS=1`` asks
    for it, ``=0`` turns it off; unset, a real GPU does (the simulator launches kernel by
    kernel unless asked)."""
    from .device import gpu_switch

    return gpu_switch(ENV) is not False


def warn_once(what: str, error: BaseException) -> None:
    reason = f"{what} runs without a CUDA graph: {type(error).__name__}: {error}"
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(reason, RuntimeWarning, stacklevel=3)


def capture(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """``(fn(), graph)``: fn's launches captured, not run; ``graph.launch()`` runs them."""
    from .device import is_simulator

    if is_simulator():
        return _capture(_Recorder(), fn)
    from numba import cuda

    with cuda.defer_cleanup():  # no memory is freed (a synchronising call) while capturing
        return _capture(_DriverCapture(), fn)


def _capture(recorder: Any, fn: Callable[[], Any]) -> tuple[Any, Any]:
    route = _jit.ROUTE
    route.launch, route.stream, route.record = recorder.route, recorder.stream_handle, recorder.record
    try:
        result = fn()
    except BaseException:
        recorder.abandon()
        raise
    finally:
        route.launch, route.stream, route.record = None, 0, None
    return result, recorder.finish()


def _with_stream(config: Any, stream: Any) -> tuple:
    config = tuple(config)
    if len(config) >= 3 and config[2]:
        # It would run now, outside the graph, and be missing from every replay.
        raise RuntimeError(f"a kernel launched on a stream of its own ({config[2]!r}) cannot be captured "
                           f"in a CUDA graph; launch it as kernel[grid, block](...)")
    return (config[0], config[1], stream, *config[3:])


class _Recorder:
    """The simulator's capture: the launches themselves (and the emulated cuBLAS products,
    ``record``), run again in order by ``launch``."""

    stream_handle = 0

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple]] = []

    def route(self, dispatcher: Any, config: Any) -> Callable[..., None]:
        # Configured at replay: the simulator's kernel[config] configures the kernel object
        # itself, which a later launch of it with another grid would overwrite.
        config = tuple(config)
        return lambda *args: self.calls.append((lambda *a: dispatcher[config](*a), args))

    def record(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.append((fn, args))

    def abandon(self) -> None:
        self.calls = []

    def finish(self) -> "_Recorder":
        return self

    def launch(self) -> None:
        for fn, args in self.calls:
            fn(*args)


def _driver() -> Any:
    from cuda.bindings import driver

    return driver


def _ok(result: Any) -> Any:
    err = result[0]
    if err != _driver().CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"CUDA driver error {err}")
    return result[1] if len(result) == 2 else result[1:]


def _stream() -> Any:
    """This thread's capture stream: non-blocking, made once (see the module)."""
    stream = getattr(_local, "stream", None)
    if stream is None:
        from numba import cuda

        driver = _driver()
        handle = _ok(driver.cuStreamCreate(int(driver.CUstream_flags.CU_STREAM_NON_BLOCKING)))
        stream = _local.stream = cuda.external_stream(int(handle))
    return stream


class _DriverCapture:
    """A capture by the driver on this thread's stream."""

    def __init__(self) -> None:
        driver = _driver()
        self.stream = _stream()
        self.keep: list[tuple] = []  # every launch's arguments: the graph points into them
        self.stream_handle = int(self.stream.handle)  # where cuBLAS's products go (_cublas)
        _ok(driver.cuStreamBeginCapture(self.stream.handle,
                                        driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))

    def route(self, dispatcher: Any, config: Any) -> Callable[..., None]:
        launcher = dispatcher[_with_stream(config, self.stream)]
        keep = self.keep

        def launch(*args: Any) -> None:
            keep.append(args)
            launcher(*args)

        return launch

    def record(self, fn: Callable[..., Any], *args: Any) -> None:
        self.keep.append(args)
        fn(*args)

    def _end(self) -> Any:
        return _driver().cuStreamEndCapture(self.stream.handle)

    def abandon(self) -> None:
        result = self._end()
        if result[0] == _driver().CUresult.CUDA_SUCCESS and result[1] is not None:
            _driver().cuGraphDestroy(result[1])
        self.keep = []

    def finish(self) -> "_DriverGraph":
        graph = _ok(self._end())
        try:
            exe = _ok(_driver().cuGraphInstantiate(graph, 0))
        except BaseException:
            _driver().cuGraphDestroy(graph)
            raise
        return _DriverGraph(graph, exe, self.stream, self.keep)


class _DriverGraph:
    """An instantiated graph and the arrays its launches point into."""

    def __init__(self, graph: Any, exe: Any, stream: Any, keep: list[tuple]) -> None:
        self.graph, self.exe, self.stream, self.keep = graph, exe, stream, keep
        self._driver = driver = _driver()
        self._legacy = driver.CUstream(0)
        flags = int(driver.CUevent_flags.CU_EVENT_DISABLE_TIMING)
        self._before, self._after = _ok(driver.cuEventCreate(flags)), _ok(driver.cuEventCreate(flags))

    def launch(self) -> None:
        """Replays the graph after what the default stream holds, and before what comes next there."""
        driver, ours = self._driver, self.stream.handle
        _ok(driver.cuEventRecord(self._before, self._legacy))
        _ok(driver.cuStreamWaitEvent(ours, self._before, 0))
        _ok(driver.cuGraphLaunch(self.exe, ours))
        _ok(driver.cuEventRecord(self._after, ours))
        _ok(driver.cuStreamWaitEvent(self._legacy, self._after, 0))

    def __del__(self) -> None:
        try:
            for event in (self._before, self._after):
                self._driver.cuEventDestroy(event)
            self._driver.cuGraphExecDestroy(self.exe)
            self._driver.cuGraphDestroy(self.graph)
        except Exception:
            pass  # the context is gone (interpreter shutdown): so is the graph
