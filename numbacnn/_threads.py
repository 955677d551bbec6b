"""One BLAS thread while numbacnn computes, scoped: ``with single_thread_blas: ...``.

numbacnn parallelises with Numba's thread pool and calls BLAS from inside its parallel loops
(``np.dot`` per sample), so BLAS must not start threads of its own there: two pools on the
same cores spin against each other (a network3 training step took 3x longer on 2 cores).
The limit holds only inside numbacnn's calls and is restored on the way out; importing
numbacnn changes no thread settings. Nested uses cost a counter increment: only the
outermost one talks to the BLAS libraries (a few microseconds).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["batch_chunks", "single_thread_blas"]


class _SingleThreadBlas:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._libs: list[Any] | None = None
        self._saved: list[int] = []

    def _blas_libs(self) -> list[Any]:
        if self._libs is None:
            # Numba's np.dot calls SciPy's BLAS, a different library from NumPy's: load it now
            # so the controller (built once: it scans the loaded libraries) limits both.
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            self._libs = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"]
        return self._libs

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                libs = self._blas_libs()
                self._saved = [lc.get_num_threads() for lc in libs]
                for lc in libs:
                    lc.set_num_threads(1)
            self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lc, n in zip(self._libs or (), self._saved):
                    lc.set_num_threads(n)


single_thread_blas = _SingleThreadBlas()


def batch_chunks(n: int) -> int:
    """Into how many chunks a kernel cuts a batch of ``n`` samples: one per thread, at most n.

    A kernel that sums over the batch keeps one partial per chunk, so no two threads add into
    the same element; the caller allocates those partials.
    """
    import numba

    return max(1, min(numba.get_num_threads(), n))
