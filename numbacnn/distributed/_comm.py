"""The communicator: MPI started through mpi4py, numbacnn's duplicate of ``COMM_WORLD``, the
ranks, collectives on NumPy buffers, and aborting the whole job."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["init", "rank", "size", "is_root", "barrier", "allreduce", "abort"]

_comm: Any = None


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"numbacnn.distributed needs mpi4py and an MPI library ({e}): "
                          f'pip install "numbacnn[distributed]" (mpi4py and mpich)') from None
    return MPI


def init() -> Any:
    """Start MPI (if mpi4py has not already) and return numbacnn's communicator.

    Collective the first time (every rank must call it; ``Trainer(..., distributed=True)``
    does), idempotent afterwards. numbacnn talks on a duplicate of ``COMM_WORLD``, so its
    collectives never mix with a program's own. With more than one rank an uncaught exception
    aborts the whole job (as ``python -m mpi4py`` does), so a plain ``mpiexec python train.py``
    cannot hang either.
    """
    global _comm
    if _comm is None:
        MPI = _mpi()
        if not MPI.Is_initialized():
            MPI.Init_thread()
        _comm = MPI.COMM_WORLD.Dup()
        if _comm.size > 1:
            _share_cores(_comm)
            _abort_on_uncaught()
    return _comm


def rank() -> int:
    """This process's rank, 0 .. size() - 1 (calls ``init()``)."""
    return init().rank


def size() -> int:
    """The number of ranks in the job (1 for a plain ``python script.py``)."""
    return init().size


def is_root() -> bool:
    """True on rank 0, the rank that prints and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here."""
    init().Barrier()


def allreduce(a: np.ndarray, op: str = "sum") -> np.ndarray:
    """Reduce a contiguous NumPy array over all ranks in place (``"sum"``, ``"max"`` or ``"min"``)
    and return it; every rank gets the same result. Through MPI's buffer interface: no pickling."""
    MPI = _mpi()
    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if op not in ops:
        raise ValueError(f"allreduce: op must be one of {', '.join(ops)}, found {op!r}")
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        raise TypeError(f"allreduce: expected a C-contiguous NumPy array, found {type(a).__name__}")
    init().Allreduce(MPI.IN_PLACE, a, op=ops[op])
    return a


def abort(code: int = 1) -> None:
    """End every rank of the job at once with exit status ``code`` (``MPI_Abort``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    # mpiexec forwards output through a proxy that MPI_Abort kills: give it a moment to pass on
    # the error just printed, or the job can end without saying why.
    time.sleep(0.25)
    _mpi().COMM_WORLD.Abort(code)


def _share_cores(comm: Any) -> None:
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.size
    finally:
        local.Free()
    if ranks_here > 1:
        import numba

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores // ranks_here)))


def _abort_on_uncaught() -> None:
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        abort(130 if issubclass(kind, KeyboardInterrupt) else 1)

    sys.excepthook = hook
