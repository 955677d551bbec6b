"""What the user sees while Numba compiles kernels for their first use.

On a fresh install every kernel compiles the first time it runs (most of a first
``numbacnn train``), then loads from the disk cache. Inside ``compile_progress()``, the first
compile of a numbacnn kernel (one defined through ``numbacnn._jit``, plugins' included) prints
one line saying so and pointing to ``numbacnn warmup``; then, on a terminal, a status line
naming the kernel being compiled, the count and the time so far, or elsewhere (a log) one
line per kernel; when the block ends, a summary line. When every kernel comes from the cache
nothing is printed. It listens to Numba's ``numba:compile`` events, which fire on cache misses
only. ``Trainer.fit`` runs its first step on a twin of the model inside one, so the epoch
bar's clock starts after compilation and its rate and ETA are sane.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Iterator, TextIO

from numba.core import event

from ._kernel_cache import MARK

__all__ = ["compile_progress", "HEADER"]

HEADER = ("compiling Numba kernels for first use (cached afterwards; `numbacnn warmup` compiles them all "
          "ahead of time)")
TICK = 0.5  # seconds between redraws of the status line while a kernel compiles

_announced = False  # the header is printed once per process


def _kernel_name(data: Any) -> str | None:
    """``conv2d_cpu.conv2d_forward [float32]``: module (numbacnn's prefix dropped), function,
    and the dtypes of its array arguments (a kernel compiles once per dtype)."""
    fn = getattr(data.get("dispatcher"), "py_func", None) if isinstance(data, dict) else None
    if not getattr(fn, MARK, False):
        return None  # not a numbacnn kernel: someone else's Numba code
    module = fn.__module__
    for prefix in ("numbacnn.layers.", "numbacnn."):
        if module.startswith(prefix):
            module = module[len(prefix):]
            break
    dtypes = sorted({str(a.dtype) for a in data.get("args") or () if hasattr(a, "ndim") and hasattr(a, "dtype")})
    return f"{module}.{fn.__qualname__}" + (f" [{', '.join(dtypes)}]" if dtypes else "")


class _Progress(event.Listener):
    """A ``numba:compile`` listener; counts outermost numbacnn compiles (a kernel's helpers
    compile inside it)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.lock = threading.RLock()
        self.depth = 0
        self.count = 0  # kernels compiled since the last summary
        self.first = 0.0  # when the first of them started
        self.kernel_start = 0.0
        self.last_end = 0.0
        self.bar: Any = None
        self.name = ""
        self.done = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="numbacnn-compile-progress", daemon=True)
        self.ticker.start()

    def on_start(self, ev: event.Event) -> None:
        name = _kernel_name(ev.data)
        if name is not None:
            with self.lock:
                self.depth += 1
                if self.depth == 1:
                    self._begin(name)

    def on_end(self, ev: event.Event) -> None:
        name = _kernel_name(ev.data)
        if name is not None:
            with self.lock:
                self.depth = max(0, self.depth - 1)
                if self.depth == 0:
                    self._end(name)

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self.stream)  # clears and redraws any bar on the stream
        self.stream.flush()

    def _begin(self, name: str) -> None:
        global _announced
        now = time.perf_counter()
        if not _announced:
            _announced = True
            self._write(HEADER)
        if self.count == 0:
            self.first = now
        self.count += 1
        self.kernel_start = now
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(file=self.stream, leave=False, dynamic_ncols=True, bar_format="{desc}")
            self._draw(name)

    def _draw(self, name: str | None = None) -> None:
        self.name = name or self.name
        seconds = time.perf_counter() - self.first
        self.bar.set_description_str(f"compiling kernel {self.count}: {self.name}, {seconds:.0f} s so far",
                                     refresh=True)

    def _end(self, name: str) -> None:
        self.last_end = time.perf_counter()
        if self.tty:
            # Gone between compiles: whatever the program prints next gets a clean line.
            self._close_bar()
        else:
            self._write(f"  compiled {name} ({self.last_end - self.kernel_start:.1f} s)")

    def _tick(self) -> None:
        while not self.done.wait(TICK):
            with self.lock:
                if self.bar is not None and self.depth:
                    self._draw()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def summary(self) -> None:
        """Close the status line and report what compiled since the last summary."""
        with self.lock:
            self._close_bar()
            if self.count:
                seconds = (self.last_end if not self.depth else time.perf_counter()) - self.first
                self._write(f"compiled {self.count} Numba kernel{'s' if self.count > 1 else ''} in "
                            f"{seconds:.1f} s (kept in the cache for later runs)")
            self.count = 0

    def stop(self) -> None:
        self.done.set()
        self.ticker.join()
        self.summary()


_active: _Progress | None = None
_depth = 0
_guard = threading.Lock()


@contextlib.contextmanager
def compile_progress(enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Show kernel compilation inside the block (on ``stream``, default ``sys.stderr``).

    Blocks nest: an inner one shares the outer's listener and ends with a summary of what
    compiled inside it. ``enabled=False`` does nothing (``--quiet``, ``verbose=0``).
    """
    global _active, _depth
    if not enabled:
        yield
        return
    with _guard:
        if _active is None:
            _active = _Progress(stream or sys.stderr)
            event.register("numba:compile", _active)
        _depth += 1
        progress = _active
    try:
        yield
    finally:
        with _guard:
            _depth -= 1
            if _depth == 0:
                event.unregister("numba:compile", progress)
                _active = None
                progress.stop()
            else:
                progress.summary()
