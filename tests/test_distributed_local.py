"""numbacnn.distributed in this process, as a job of one rank (MPI's singleton start): the
distributed Trainer must train exactly as the plain one, and the gradient buckets must give
every gradient back in its place."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mpi4py")

import numbacnn as nc  # noqa: E402
import numbacnn.distributed as dist  # noqa: E402
from numbacnn.augment import RandomShift  # noqa: E402
from numbacnn.data import load_digits, train_test_split  # noqa: E402
from numbacnn.optim import SGD, StepLR  # noqa: E402
from numbacnn.train import Callback, TrainingDivergedError  # noqa: E402

pytestmark = pytest.mark.mpi


def net(seed: int = 0, device: str = "cpu") -> nc.Model:
    g = nc.Graph()
    x = g.input((1, 8, 8))
    h = g.dropout(g.relu(g.linear(g.flatten(x), out_features=24, name="fc1")), p=0.3, name="drop")
    h = g.relu(g.linear(h, out_features=16, name="fc2"))
    g.output(g.linear(h, out_features=10, name="fc3"))
    return nc.Model(g, seed=seed, device=device)


def test_one_rank_trains_bit_for_bit_as_the_plain_trainer(tmp_path):
    (x, y), (xv, yv) = train_test_split(*load_digits(), test_size=0.2, seed=0)
    x, y, xv, yv = x[:250], y[:250], xv[:90], yv[:90]
    runs = []
    for distributed in (False, True):
        model = net(seed=3)
        opt = SGD(model, lr=0.05, momentum=0.9)
        t = nc.Trainer(model, opt, schedule=StepLR(opt, step_size=1, gamma=0.5), seed=4, distributed=distributed)
        h = t.fit(x, y, epochs=2, batch_size=32, validation_data=(xv, yv), augment=RandomShift(1), verbose=0,
                  checkpoint=tmp_path / f"{distributed}.npz")
        runs.append((t, h.history, t.evaluate(xv, yv, batch_size=40)))
    (plain, h0, e0), (one, h1, e1) = runs
    assert dist.size() == 1
    for k, v in plain.model.state().items():
        np.testing.assert_array_equal(one.model.state()[k], v, err_msg=k)
    assert h1 == h0 and e1 == e0
    assert nc.Model.load(tmp_path / "True.npz").param_count() == one.model.param_count()


class KeepWeights(Callback):
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_batch_end(self, batch, logs, trainer) -> None:
        self.seen.append(trainer.model.state())


def test_a_nan_loss_stops_a_distributed_fit_before_the_weights_change():
    """The loss is checked after the gradient average (every rank sees the global loss, so all
    stop together), and the diverged batch's step is skipped."""
    (x, y), _ = train_test_split(*load_digits(), test_size=0.2, seed=0)
    x = x[:64].copy()
    x[40] = np.nan  # in the second batch of 32
    model = net()
    t = nc.Trainer(model, SGD(model, lr=0.05), distributed=True)
    keep = KeepWeights()
    with pytest.raises(TrainingDivergedError, match="batch 2/2"):
        t.fit(x, y[:64], epochs=1, batch_size=32, shuffle=False, verbose=0, callbacks=[keep])
    assert len(keep.seen) == 1
    for k, v in keep.seen[0].items():
        np.testing.assert_array_equal(model.state()[k], v, err_msg=k)


class PeerOfOnes:
    """A communicator of two ranks whose other rank's gradients are all ones: the average of
    g is then (g + 1) / 2, so a gradient copied to or from the wrong place shows."""

    size = 2

    def Allreduce(self, send, buf, op):
        buf += 1


@pytest.mark.parametrize("bucket_bytes", [1, 2000, 10**9])
def test_buckets_give_every_gradient_back_in_its_place(bucket_bytes):
    model = net()
    rng = np.random.default_rng(0)
    for g in model.grads.values():
        g[...] = rng.standard_normal(g.shape)
    before = {k: v.copy() for k, v in model.grads.items()}
    averager = dist.GradientAverager(model, bucket_bytes=bucket_bytes)
    keys = [k for slots in averager.slots for k, _, _ in slots]
    assert keys == list(model.grads)  # each parameter in exactly one bucket, in the model's order
    assert len(averager.buffers) == {1: len(keys), 2000: 3, 10**9: 1}[bucket_bytes]
    largest = max(g.nbytes for g in model.grads.values())
    assert all(b.nbytes <= max(bucket_bytes, largest) for b in averager.buffers)
    # On the CPU a bucket is a slice of the model's flat gradient: summed in place, no copy.
    assert all(np.shares_memory(b, model.grads.flat) for b in averager.buffers)
    assert sum(b.size for b in averager.buffers) == model.grads.flat.size
    averager.average()  # one rank: the mean is the gradient itself
    for k, v in before.items():
        np.testing.assert_array_equal(model.grads[k], v, err_msg=k)
    averager.comm = PeerOfOnes()
    averager.average()
    for k, v in before.items():
        np.testing.assert_allclose(model.grads[k], (v + 1) / 2, rtol=1e-6, err_msg=k)


@pytest.mark.cuda
def test_buckets_copy_device_gradients_through_the_host():
    model = net(device="cuda")
    rng = np.random.default_rng(1)
    for k, g in model.grads.items():
        g.copy_to_device(rng.standard_normal(g.shape).astype(np.float32))
    before = {k: v.copy_to_host() for k, v in model.grads.items()}
    averager = dist.GradientAverager(model, bucket_bytes=2000)
    averager.comm = PeerOfOnes()
    averager.average()
    for k, v in before.items():
        np.testing.assert_allclose(model.grads[k].copy_to_host(), (v + 1) / 2, rtol=1e-6, err_msg=k)
