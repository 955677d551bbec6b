"""numbacnn.distributed without MPI: the sampler against PyTorch's DistributedSampler, and the
learning-rate rule. (The jobs over MPI are in test_distributed.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from numbacnn.distributed import DistributedSampler, scale_lr


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n", [1, 3, 7, 10, 16])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_unshuffled_shares_are_pytorchs(n, replicas, drop_last):
    data = pytest.importorskip("torch.utils.data")
    for r in range(replicas):
        ours = DistributedSampler(n, shuffle=False, drop_last=drop_last, num_replicas=replicas, rank=r)
        theirs = data.DistributedSampler(range(n), num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs), (n, replicas, r)
        assert len(ours) == len(theirs)


def test_shuffled_shares_split_one_permutation_per_epoch():
    n, replicas, seed = 11, 4, 5
    for epoch in (0, 3):
        samplers = [DistributedSampler(n, seed=seed, num_replicas=replicas, rank=r) for r in range(replicas)]
        for s in samplers:
            s.set_epoch(epoch)
        shares = [s.indices() for s in samplers]
        assert {len(s) for s in shares} == {3}  # 11 samples padded to 12: every rank 3
        # Interleaved back, the shares are the Trainer's shuffle of that epoch, wrapped around.
        whole = np.empty(12, np.int64)
        for r, share in enumerate(shares):
            whole[r::replicas] = share
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        np.testing.assert_array_equal(whole, np.concatenate([perm, perm[:1]]))
    assert not np.array_equal(DistributedSampler(n, seed=seed, num_replicas=2, rank=0).indices(),
                              DistributedSampler(n, seed=seed + 1, num_replicas=2, rank=0).indices())


def test_fewer_samples_than_ranks_wrap_around():
    shares = [list(DistributedSampler(2, shuffle=False, num_replicas=5, rank=r)) for r in range(5)]
    assert shares == [[0], [1], [0], [1], [0]]


def test_sampler_refuses_a_rank_outside_the_job():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), found 2"):
        DistributedSampler(10, num_replicas=2, rank=2)


def test_scale_lr_is_linear_in_the_number_of_ranks():
    assert scale_lr(0.05, world_size=8) == pytest.approx(0.4)
    assert scale_lr(0.05, world_size=1) == 0.05
    with pytest.raises(ValueError, match="world_size must be an int >= 1"):
        scale_lr(0.05, world_size=0)
