"""Which samples each rank trains on: PyTorch's ``DistributedSampler`` semantics.

Every rank draws the same permutation of the whole training set (seeded by the trainer's seed
and the epoch, as the single-process Trainer shuffles); the permutation is padded by wrapping
around to a multiple of the number of ranks, and rank r takes positions r, r + size, ...
So every rank has the same number of samples, hence of batches (no rank waits at a collective
for a batch that never comes), and the k-th global batch is the k-th block of N*B positions of
the permutation on any number of ranks N at per-rank batch B: N ranks at batch B see exactly
the batches of one process at batch N*B when N divides the set (otherwise the padding
repeats the first positions, as PyTorch does; ``drop_last=True`` drops the tail instead).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ._comm import rank as _rank, size as _size

__all__ = ["DistributedSampler", "shard"]


def shard(order: np.ndarray, rank: int, size: int, drop_last: bool = False) -> np.ndarray:
    """Rank ``rank``'s positions of ``order`` (the whole set's order for this epoch)."""
    n = len(order)
    if drop_last:
        total = (n // size) * size
        order = order[:total]
    else:
        total = -(-n // size) * size
        if total > n:  # wrap around, as often as it takes when there are fewer samples than ranks
            order = np.resize(order, total)
    return order[rank:total:size]


class DistributedSampler:
    """Indices of this rank's share of a dataset of ``n`` samples, epoch by epoch.

    ``for i in sampler`` gives the indices of the current epoch (``set_epoch(e)`` before each
    epoch, as with PyTorch's); ``len(sampler)`` is how many, the same on every rank. ``seed``
    must be equal on every rank; ``shuffle=False`` keeps the data's order (rank r gets samples
    r, r + size, ...). ``num_replicas`` and ``rank`` default to the job's.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        self.num_replicas = _size() if num_replicas is None else int(num_replicas)
        self.rank = _rank() if rank is None else int(rank)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"DistributedSampler: n must be a number of samples >= 0, found {n!r}")
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {self.num_replicas}), found {self.rank}")
        self.n, self.shuffle, self.seed, self.drop_last = int(n), bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutation next (the same on every rank)."""
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """The whole set's order this epoch: the Trainer's shuffle for ``(seed, epoch)``."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def indices(self) -> np.ndarray:
        return shard(self.order(), self.rank, self.num_replicas, self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.num_replicas
        return -(-self.n // self.num_replicas)
