"""Gradient averaging over ranks: a few large flat buckets, one ``Allreduce`` each.

Per-parameter collectives would pay MPI's latency once per tensor (a ResNet has hundreds).
The model's gradients already lie in one flat array (``model.grads.flat``, in the model's
order), so a bucket is a slice of it, cut at parameter boundaries, of at most ``BUCKET_BYTES``:
on the CPU each slice is summed over the ranks in place through MPI's buffer interface (no
copy, no pickling) and divided by their number, right in ``model.grads``.

The averaging runs after the whole backward pass, not overlapped with it: on the CPU the
ranks' kernels already use every core, so there is nothing idle to overlap with, and the
measured allreduce is a few percent of a step (``bench/distributed_allreduce.py``). A model on
the GPU copies its gradients through these host buffers (device to host, allreduce, host to
device, one copy per bucket): the MPI from the package index is not CUDA-aware.
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
        self.ranges: list[tuple[int, int]] = []  # per bucket: its slice of model.grads.flat
        used = 0
        for key, (a, b, _) in model.grads.layout.spans.items():
            n = b - a
            if used and (used + n) * itemsize > cap:
                self.slots.append([])
                used = 0
            if not self.slots[-1]:
                self.ranges.append((a, a))
            self.slots[-1].append((key, used, used + n))
            self.ranges[-1] = (self.ranges[-1][0], b)
            used += n
        if not self.ranges:
            self.ranges.append((0, 0))
        self._host: list[np.ndarray] | None = None
        self.buffers = self._buffers()

    def _buffers(self) -> list[np.ndarray]:
        """Per bucket, the host array MPI sums: the gradients themselves on the CPU, host
        buffers (allocated once) for a model on the GPU."""
        if self.model.device == "cpu":
            flat = self.model.grads.flat
            return [flat[a:b] for a, b in self.ranges]
        if self._host is None:
            self._host = [np.empty(b - a, self.model.dtype) for a, b in self.ranges]
        return self._host

    @property
    def nbytes(self) -> int:
        """Bytes each rank sends per step: the whole gradient."""
        return sum(b.nbytes for b in self.buffers)

    def average(self) -> None:
        """Sum every gradient over the ranks and divide by their number, in place."""
        from mpi4py import MPI

        scale = np.dtype(self.model.dtype).type(1.0 / self.comm.size)
        self.buffers = self._buffers()  # the model may have moved since the last step
        flat, cuda = self.model.grads.flat, self.model.device != "cpu"
        for (a, b), buf in zip(self.ranges, self.buffers):
            if cuda:  # a numba.cuda device array: the one copy to the host MPI needs
                flat[a:b].copy_to_host(buf)
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            buf *= scale
            if cuda:
                flat[a:b].copy_to_device(buf)
