"""Gradient averaging over ranks: a few large flat buckets, one ``Allreduce`` each.

Per-parameter collectives would pay MPI's latency once per tensor (a ResNet has hundreds);
one bucket of everything would need the model's whole gradient twice in memory for huge
models. So parameters are packed, in the model's order, into flat host buffers of at most
``BUCKET_BYTES`` each, allocated once; every step copies the gradients in, sums each bucket
over the ranks in place through MPI's buffer interface (no pickling), and writes
``sum / size`` back into ``model.grads``.

The averaging runs after the whole backward pass, not overlapped with it: on the CPU the
ranks' kernels already use every core, so there is nothing idle to overlap with, and the
measured allreduce is a few percent of a step (``bench/distributed_allreduce.py``). A model on
the GPU copies its gradients through these host buffers (device to host, allreduce, host to
device): the MPI from the package index is not CUDA-aware.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GradientAverager", "BUCKET_BYTES"]

#: Bytes per gradient bucket: parameters are packed into flat buffers of at most this size
#: (a larger parameter gets a bucket of its own), each averaged by one ``Allreduce``; PyTorch
#: DDP's default ``bucket_cap_mb`` is 25 too. Read when a ``GradientAverager`` is built, so
#: setting ``numbacnn.distributed.buckets.BUCKET_BYTES`` before ``Trainer(...)`` sizes its buckets.
BUCKET_BYTES = 25 * 2**20


class GradientAverager:
    """``average()`` replaces every gradient in ``model.grads`` by its mean over the ranks.

    Built once per model (the buckets are preallocated); call ``average()`` on every rank after
    ``backward`` and before the optimizer's ``step``, as the Trainer does.
    """

    def __init__(self, model: Any, bucket_bytes: int | None = None) -> None:
        from ._comm import init

        cap = BUCKET_BYTES if bucket_bytes is None else int(bucket_bytes)
        if cap < 1:
            raise ValueError(f"GradientAverager: bucket_bytes must be >= 1, found {bucket_bytes!r}")
        self.comm = init()
        self.model = model
        itemsize = np.dtype(model.dtype).itemsize
        self.bucket_bytes = cap
        self.slots: list[list[tuple[str, int, int]]] = [[]]  # per bucket: (key, start, stop)
        used = 0
        for key, g in model.grads.items():
            n = int(np.prod(g.shape))
            if used and (used + n) * itemsize > cap:
                self.slots.append([])
                used = 0
            self.slots[-1].append((key, used, used + n))
            used += n
        self.buffers = [np.empty(b[-1][2] if b else 0, model.dtype) for b in self.slots]

    @property
    def nbytes(self) -> int:
        """Bytes each rank sends per step: the whole gradient."""
        return sum(b.nbytes for b in self.buffers)

    def average(self) -> None:
        """Sum every gradient over the ranks and divide by their number, in place."""
        from mpi4py import MPI

        grads, device = self.model.grads, self.model.device
        scale = np.dtype(self.model.dtype).type(1.0 / self.comm.size)
        for slots, buf in zip(self.slots, self.buffers):
            for key, a, b in slots:
                _to_host(grads[key], buf[a:b], device)
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf *= scale
            for key, a, b in slots:
                _from_host(buf[a:b], grads[key], device)


def _to_host(g: Any, dst: np.ndarray, device: str) -> None:
    if device == "cpu":
        np.copyto(dst, g.reshape(g.size))
    else:  # a numba.cuda device array: the one copy to the host MPI needs
        g.reshape(g.size).copy_to_host(dst)


def _from_host(src: np.ndarray, g: Any, device: str) -> None:
    if device == "cpu":
        np.copyto(g.reshape(g.size), src)
    else:
        g.reshape(g.size).copy_to_device(src)
