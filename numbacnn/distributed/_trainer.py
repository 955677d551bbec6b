"""What ``Trainer(..., distributed=True)`` does differently, gathered behind one object.

``train.py`` calls these at its few distributed points: the start of ``fit`` (rank 0's state
to every rank, settings checked), each epoch's share of the samples, the gradient average of
every step, the end of an epoch (batch-norm statistics averaged, ``stop_training`` agreed on),
and ``evaluate`` (each rank a contiguous slice, the sums reduced).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ._comm import allreduce, init
from ._sync import broadcast_trainer
from .buckets import GradientAverager
from .sampler import shard

__all__ = ["DataParallel"]


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A digest of the labels and of 64 samples spread over x: different data on some rank is
    caught at the start of fit, at the cost of reading a few images."""
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(len(x), 64)).astype(np.int64))
    h = hashlib.blake2b(np.ascontiguousarray(x[rows]).tobytes(), digest_size=16)
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


class DataParallel:
    """The Trainer's link to the other ranks (see ``numbacnn.distributed`` for the semantics)."""

    def __init__(self, model: Any) -> None:
        comm = init()
        self.rank, self.size = comm.rank, comm.size
        self.is_root = self.rank == 0
        self.averager = GradientAverager(model)
        self._step = np.zeros(2, np.float64)

    def start_fit(self, trainer: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, shuffle: bool,
                  validation_data: tuple[np.ndarray, np.ndarray] | None, verbose: int) -> int:
        """Rank 0's trainer on every rank (after rank 0 has resumed, if it did), the data and
        settings compared first; returns the verbosity of this rank (0 but on rank 0)."""
        checks = {"x shape": x.shape, "x dtype": x.dtype.str, "y shape": y.shape, "data": _fingerprint(x, y),
                  "epochs": epochs, "batch_size": batch_size, "shuffle": shuffle,
                  "validation data": None if validation_data is None else
                  (validation_data[0].shape, _fingerprint(*validation_data))}
        broadcast_trainer(trainer, checks)
        return verbose if self.is_root else 0

    def samples(self, n: int) -> int:
        """How many samples each rank trains on per epoch, out of ``n``."""
        return -(-n // self.size)

    def epoch_share(self, order: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.random.Generator]:
        """This rank's positions of the epoch's ``order``, and its generator for augmentation:
        rank 0 keeps the epoch's (a 1-rank run augments as a plain one), rank r its r-th jump."""
        mine = shard(order, self.rank, self.size)
        return mine, rng if self.rank == 0 else np.random.Generator(rng.bit_generator.jumped(self.rank))

    def average_gradients(self, loss: float, correct: int) -> tuple[float, int]:
        """Average the gradients over the ranks; returns the loss and correct count of the
        global batch (every rank's batch has the same size), the same on every rank."""
        self.averager.average()
        self._step[:] = loss, correct
        allreduce(self._step)
        return float(self._step[0] / self.size), int(self._step[1])

    def average_buffers(self, model: Any) -> None:
        """Average the batch-norm running statistics at the end of an epoch, so every rank
        validates, and rank 0 saves, the same model."""
        if not model.buffers:
            return
        from ..device import get_backend

        backend = get_backend(model.device)
        host = {k: backend.to_host(v) for k, v in model.buffers.items()}
        flat = allreduce(np.concatenate([h.reshape(-1) for h in host.values()]))
        flat *= flat.dtype.type(1.0 / self.size)
        start = 0
        for k, h in host.items():
            backend.assign(model.buffers[k], np.ascontiguousarray(flat[start:start + h.size].reshape(h.shape)))
            start += h.size

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is on one (a callback's ``stop_training``)."""
        return bool(allreduce(np.array([flag], np.int64), "max")[0])

    def eval_range(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice of an evaluation set of ``n`` samples: every sample once."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def total(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        return allreduce(np.array(values, np.float64)).tolist()
