"""Data-parallel training over MPI (mpi4py): ``pip install "numbacnn[distributed]"``.

Launch one process per rank with ``mpiexec -n 4 python -m mpi4py train.py`` (the ``-m mpi4py``
form makes an uncaught error on one rank abort the whole job instead of leaving the others
waiting) or ``mpiexec -n 4 numbacnn train --distributed``; across machines, ``mpiexec -n 8
-f hosts python -m mpi4py train.py`` with one host name (``node1:4``) per line in ``hosts``.

    import numbacnn as nc
    import numbacnn.distributed as dist

    dist.init()                                   # optional: the Trainer calls it
    trainer = nc.Trainer(model, opt, loss="cross_entropy", distributed=True)
    trainer.fit(x, y, epochs=10, batch_size=64)   # 64 per rank: size() * 64 per step

The semantics are Horovod's and PyTorch DDP's: every rank starts from rank 0's parameters,
buffers and optimizer state; each epoch splits the training set as PyTorch's
``DistributedSampler`` does (``sampler.py``); gradients are averaged over the ranks before
every optimizer step (``buckets.py``: a few large flattened buffers, MPI's buffer interface,
no pickling), so N ranks at batch B train as one process at batch N*B on the same samples;
batch-norm running statistics are averaged at the end of every epoch; ``evaluate`` and the
history give whole-dataset figures on every rank; only rank 0 prints progress and writes
checkpoints. For loops of your own: ``broadcast_model``, ``broadcast_optimizer``,
``GradientAverager``, ``DistributedSampler``, ``allreduce``.

Every rank must run the same program on the same data: the same model graph and dtype, the same
training arrays (each rank reads its share of them by index), optimizer class, loss, batch size
and epochs; ``fit`` checks the shapes and settings and refuses a mismatch, naming the rank.
Numba's threads: with several ranks on one machine, ``init()`` gives each rank its share of the
machine's cores (``cores // ranks on this machine``) unless ``NUMBA_NUM_THREADS`` is set, as
``torchrun`` does with ``OMP_NUM_THREADS``: Numba pools sized for the whole machine in every
rank would spin against each other.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["init", "rank", "size", "is_root", "barrier", "allreduce", "abort", "scale_lr", "BUCKET_BYTES",
           "DistributedSampler", "GradientAverager", "broadcast_model", "broadcast_optimizer"]

#: Bytes per gradient bucket: parameters are packed into flat buffers of at most this size
#: (a larger parameter gets a bucket of its own), each averaged by one ``Allreduce``. PyTorch
#: DDP's default ``bucket_cap_mb`` is 25 too; read when a ``GradientAverager`` is built.
BUCKET_BYTES = 25 * 2**20

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
    collectives never mix with a program's own. With more than one rank an uncaught exception aborts the whole job
    (as ``python -m mpi4py`` does), so a plain ``mpiexec python train.py`` cannot hang either.
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


def scale_lr(lr: float, world_size: int | None = None) -> float:
    """The learning rate for ``world_size`` ranks (default ``size()``) from ``lr``, the rate tuned
    for one process at the same per-rank batch: ``lr * world_size``.

    The linear scaling rule of Goyal et al. (2017, "Accurate, Large Minibatch SGD"): the global
    batch is ``world_size`` times larger, so each step may go that much further. Pair it with a
    warm-up, as they do (5 epochs), e.g. ``nc.optim.CosineAnnealingLR(opt, T_max, warmup=5)``:
    early steps at the full scaled rate diverge. It is a rule for SGD with momentum and global
    batches up to about 8k; Adam is usually left at its single-process rate.
    """
    n = size() if world_size is None else world_size
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"scale_lr: world_size must be an int >= 1, found {world_size!r}")
    return float(lr) * int(n)


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


from .buckets import GradientAverager  # noqa: E402  (they use init() and _mpi() above)
from .sampler import DistributedSampler  # noqa: E402
from ._sync import broadcast_model, broadcast_optimizer  # noqa: E402
