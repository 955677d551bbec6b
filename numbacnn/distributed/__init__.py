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
every optimizer step (``buckets.py``: slices of the model's flat gradient, MPI's buffer interface,
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

import numpy as np

from ._comm import abort, allreduce, barrier, init, is_root, rank, size
from ._sync import broadcast_model, broadcast_optimizer
from .buckets import GradientAverager
from .sampler import DistributedSampler

__all__ = ["init", "rank", "size", "is_root", "barrier", "allreduce", "abort", "scale_lr", "DistributedSampler", "GradientAverager", "broadcast_model", "broadcast_optimizer"]


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
