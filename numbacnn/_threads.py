"""One BLAS thread while numbacnn computes, scoped: ``with single_thread_blas: ...``; and
``with kernel_launches(): ...``, which keeps Python threads from launching parallel kernels at
once where Numba's thread pool cannot take it.

numbacnn parallelises with Numba's thread pool and calls BLAS from inside its parallel loops
(``np.dot`` per sample), so BLAS must not start threads of its own there: two pools on the
same cores spin against each other (a network3 training step took 3x longer on 2 cores).
The limit holds only inside numbacnn's calls, made from whichever Python thread, and is
restored on the way out; importing numbacnn changes no thread settings. Nested uses cost a counter increment: only the
outermost one talks to the BLAS libraries (a few microseconds).
"""

from __future__ import annotations

import contextlib
import threading
from threading import get_ident
from typing import Any, Callable

__all__ = [
    "PARALLEL_MIN", "PARALLEL_MIN_FLOPS", "batch_chunks", "kernel_launches", "single_thread_blas", "numba_threads",
    "on_one_thread",
]

#: Below this many elements a memory-bound kernel (elementwise, pooling) runs its loop serially
#: in the calling thread: waking Numba's thread pool costs more than the loop. Measured on 2
#: cores (ReLU, float32): 2,880 elements 0.35 us serial against 2.8 us parallel (20 us when
#: the machine is busy, as the pool waits for a descheduled thread); even at 65,536; 1.6x
#: faster in parallel from 200,000. The kernels read it when compiled (a change recompiles
#: them: the kernel cache covers this file).
PARALLEL_MIN = 1 << 16
#: From this many floating-point operations (a sample's forward, ``Layer.flops``) a node in a
#: batch-1 inference keeps the thread pool, where every value is under PARALLEL_MIN: its
#: kernel may split the sample over the threads (conv2d's shifted taps, im2col and Winograd
#: paths do). vgg_small at batch 1 (its 32->32 3x3 at 32x32 is 19 MFLOP), 2 threads: 584 us
#: with the pool against 780 on one thread. Since shifted taps split a sample's tiles (from
#: conv2d_cpu.SPLIT_MIN_MACS), 2 MFLOP rather than 16 (one process each, five medians of 300
#: calls, us): googlenet_mini (3x3 convs of 2.4-5.3 MFLOP) 715-764 -> 639-711, network3 (its
#: 20->40 5x5 at 8x8, 2.6 MFLOP) 85-87 -> 71-73; at 4 MFLOP googlenet_mini read 657-692.
PARALLEL_MIN_FLOPS = 1 << 21


def _blas_thread_controls(lc: Any) -> tuple[Callable[[], int], Callable[[int], Any]]:
    """(get, set) of one BLAS library's thread count, process-wide from any Python thread.

    threadpoolctl (3.8 on) lets only the first Python thread that sets an OpenBLAS limit
    change it and silently ignores every other thread's calls, so after one model call in the
    main thread a worker thread's limit did nothing and its kernels ran with BLAS threads
    nested in Numba's (network3 inference 1.5-6x slower). A pthreads OpenBLAS keeps one
    process-wide count, which is what the kernels need anyway (they call BLAS from Numba's
    own worker threads, never from the Python thread that set it), so its own setter is
    called here; the lock in ``_SingleThreadBlas`` keeps numbacnn's threads from fighting
    over it. Other libraries (and an OpenMP OpenBLAS) go through threadpoolctl. The C calls
    also skip threadpoolctl's wrappers, several microseconds on every model call.
    """
    if getattr(lc, "internal_api", None) == "openblas" and getattr(lc, "threading_layer", None) == "pthreads":
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                get = getattr(getattr(lc, "dynlib", None), f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(getattr(lc, "dynlib", None), f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return lc.get_num_threads, lc.set_num_threads


class _SingleThreadBlas:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0  # threads inside, all together
        self._held: dict[int, int] = {}  # thread id -> its own depth, nested uses included
        self._libs: list[tuple[Callable[[], int], Callable[[int], Any]]] | None = None
        self._saved: list[int] = []

    def _blas_libs(self) -> list[tuple[Callable[[], int], Callable[[int], Any]]]:
        if self._libs is None:
            # Numba's np.dot calls SciPy's BLAS, a different library from NumPy's: load it now
            # so the controller (built once: it scans the loaded libraries) limits both.
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            self._libs = [_blas_thread_controls(lc) for lc in ThreadpoolController().lib_controllers
                          if lc.user_api == "blas"]
        return self._libs

    # A use nested in one of the same thread's (a layer's kernel call inside a model call) only
    # counts, in the thread's own entry (each thread touches only its own): the outer use holds
    # the limit until it ends, so no lock is taken. 0.36 us against 0.55 with the lock.
    def __enter__(self) -> None:
        me = get_ident()
        held = self._held
        depth = held.get(me, 0)
        if depth:
            held[me] = depth + 1
            return
        lock = self._lock  # acquire and release by hand, the loops plain: 1.6 us against 2.1
        lock.acquire()
        try:
            if not self._depth:
                saved = []
                for get, set_ in self._libs if self._libs is not None else self._blas_libs():
                    n = get()
                    saved.append(n)
                    if n != 1:
                        set_(1)
                self._saved = saved
            self._depth += 1
        finally:
            lock.release()
        held[me] = 1  # entered: counted only now (an interrupted acquire or a failed set leaves no count)

    def __exit__(self, *exc: Any) -> None:
        me = get_ident()
        held = self._held
        depth = held[me] - 1
        if depth:
            held[me] = depth
            return
        del held[me]
        lock = self._lock
        lock.acquire()
        try:
            self._depth -= 1
            if not self._depth:
                for (_, set_), n in zip(self._libs or (), self._saved):
                    if n != 1:
                        set_(n)
        finally:
            lock.release()


single_thread_blas = _SingleThreadBlas()


_launch_lock = threading.RLock()
_no_lock = contextlib.nullcontext()
_pool_threadsafe: bool | None = None


def kernel_launches() -> Any:
    """A process-wide lock around numbacnn's kernels where Numba's threading layer is
    ``workqueue``, nothing where it is ``omp`` or ``tbb``.

    workqueue takes parallel launches from one Python thread at a time and aborts the process
    on a second (``Concurrent access has been detected``); omp and tbb take them from any
    number. The layer is chosen at the first parallel launch, so until then every call is
    serialised.
    """
    global _pool_threadsafe
    if _pool_threadsafe is None:
        import numba

        try:
            _pool_threadsafe = numba.threading_layer() != "workqueue"
        except ValueError:  # no parallel kernel has run yet
            return _launch_lock
    return _no_lock if _pool_threadsafe else _launch_lock


def batch_chunks(n: int) -> int:
    """Into how many chunks a kernel cuts a batch of ``n`` samples: one per thread, at most n.

    A kernel that sums over the batch keeps one partial per chunk, so no two threads add into
    the same element; the caller allocates those partials.
    """
    import numba

    return max(1, min(numba.get_num_threads(), n))


_thread_count: tuple[Callable[[], int], Callable[[int], Any]] | None = None


def numba_threads(n: int) -> int:
    """Set Numba's thread count for the calling Python thread's launches to ``n`` (Numba keeps
    it per thread, so other threads' calls are untouched); returns the count it replaces.

    The executor runs a call whose every chunk count is 1 and whose every value is under
    PARALLEL_MIN elements on one thread: a parallel loop left there still wakes the whole
    pool (2.8 us quiet, 20 us and more on a busy machine) where a one-thread region costs
    1.4 us. Numba's own C setters are called (0.2 us for both): its public functions
    re-check the pool on every call (5.5 us for a get and two sets).
    """
    global _thread_count
    if _thread_count is None:
        import numba
        from numba.np.ufunc import parallel

        parallel._launch_threads()
        get, set_ = getattr(parallel, "_get_num_threads", None), getattr(parallel, "_set_num_threads", None)
        _thread_count = (get, set_) if get is not None and set_ is not None else \
            (numba.get_num_threads, numba.set_num_threads)
    get, set_ = _thread_count
    previous = get()
    if previous != n:
        set_(n)
    return previous


def on_one_thread(one: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with Numba's thread count for this Python thread at 1 while it runs when
    ``one`` is set (and restored however it ends)."""
    if not one:
        return fn(*args)
    threads = numba_threads(1)
    try:
        return fn(*args)
    finally:
        if threads != 1:
            _thread_count[1](threads)  # type: ignore[index]  # set by numba_threads
