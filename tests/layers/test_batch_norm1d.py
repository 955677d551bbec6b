"""batch_norm1d: batch_norm2d's kernels on (N, C) and (N, C, L) inputs, as torch.nn.BatchNorm1d."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

from _bn_cases import bn_model, bn_params, check_bn_matches_torch

BatchNorm1d = nc.get_layer("batch_norm1d")


def channel_values(x, c):
    """Every value of channel c: over N for (N, C), over N and L for (N, C, L)."""
    return [float(v) for v in np.asarray(x[:, c]).reshape(-1)]


def bn_ref(x, weight=None, bias=None, eps=1e-5, mean=None, var=None):
    """y per channel; the batch's biased statistics unless ``mean``/``var`` are given."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        values = channel_values(x, c)
        m = sum(values) / len(values) if mean is None else mean[c]
        v = sum((u - m) ** 2 for u in values) / len(values) if var is None else var[c]
        y[:, c] = (x[:, c] - m) / np.sqrt(v + eps)
        if weight is not None:
            y[:, c] = y[:, c] * weight[c] + bias[c]
    return y


def bn_grads_ref(x, gy, weight, eps=1e-5, batch_stats=True):
    """gx, gw, gb per channel: through the batch's statistics, or with them fixed at (0, 1)."""
    gx = np.empty_like(x)
    C = x.shape[1]
    gw, gb = np.empty(C), np.empty(C)
    for c in range(C):
        xs, gs = np.asarray(channel_values(x, c)), np.asarray(channel_values(gy, c))
        m, v = (xs.mean(), xs.var()) if batch_stats else (0.0, 1.0)
        k = 1 / np.sqrt(v + eps)
        xhat = (xs - m) * k
        gw[c], gb[c] = (gs * xhat).sum(), gs.sum()
        g = weight[c] * k * (gs - gs.mean() - xhat * (gs * xhat).mean() if batch_stats else gs)
        gx[:, c] = g.reshape(gx[:, c].shape)
    return gx, gw, gb


BAD = [([(2, 3, 4, 5)], "expected an input of shape (C,) or (C, L), found (3, 4, 5)"),
       ([(2, 3, 4, 5, 6)], "expected an input of shape (C,) or (C, L), found (3, 4, 5, 6)")]


@pytest.mark.parametrize("shape", [(5, 3), (2, 4), (3, 2, 5), (1, 3, 4), (4, 1, 1)])
def test_batch_norm1d_training_cpu(shape):
    check_layer(BatchNorm1d(), [shape], bn_ref, training=True, params=bn_params(shape[1]), cuda=False,
                bad_shapes=BAD)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5)])
def test_batch_norm1d_eval_cpu(shape):
    C = shape[1]
    mean, var = np.linspace(-1.0, 1.5, C), np.linspace(0.25, 2.0, C)

    class Stats(BatchNorm1d):
        def init_buffers(self, input_shapes):
            return {"running_mean": mean, "running_var": var}

    check_layer(Stats(affine=False), [shape], partial(bn_ref, mean=mean, var=var), cuda=False)


# (options, input shape, dtype): vectors and sequences, batch 1 with a length, odd sizes
TORCH = [
    (dict(), (5, 3), "float32"),
    (dict(), (3, 4, 7), "float32"),
    (dict(eps=1e-3, momentum=0.3), (1, 5, 3), "float64"),
    (dict(momentum=None), (6, 2), "float64"),
    (dict(momentum=None), (2, 3, 5), "float32"),
    (dict(affine=False), (4, 3, 3), "float32"),
    (dict(track_running_stats=False), (3, 2), "float64"),
    (dict(track_running_stats=False, affine=False), (2, 3, 4), "float32"),
]


@pytest.mark.parametrize("kw, shape, dtype", TORCH)
def test_batch_norm1d_matches_torch(kw, shape, dtype):
    check_bn_matches_torch("BatchNorm1d", BatchNorm1d(**kw), kw, shape, dtype, np.random.default_rng(len(shape) * 10 + shape[0]),
                           trainings=(True, True, True, False), scale=3, shift=2)


def test_batch_norm1d_needs_more_than_one_value_per_channel():
    model = bn_model(BatchNorm1d(), (1, 3))
    with pytest.raises(ValueError, match=r"batch_norm1d node 'bn': expected more than 1 value per channel"):
        model.forward(np.ones((1, 3), np.float32), training=True)
    model.forward(np.ones((1, 3), np.float32), training=False)  # running statistics: fine
    bn_model(BatchNorm1d(), (1, 3, 2)).forward(np.ones((1, 3, 2), np.float32), training=True)


def test_batch_norm1d_builder_buffers_and_flops():
    g = nc.Graph()
    h = g.batch_norm1d(g.input((4, 6)), momentum=None, name="bn1")
    model = nc.Model(g)
    assert h.config == {"eps": 1e-5, "momentum": None, "affine": True, "track_running_stats": True}
    assert sorted(model.buffers) == ["bn1.num_batches_tracked", "bn1.running_mean", "bn1.running_var"]
    assert model.params["bn1.weight"].shape == (4,) and model.flops() == 4 * 4 * 6
    assert nc.Model.from_spec(model.to_spec()).buffers.keys() == model.buffers.keys()


@pytest.mark.parametrize("kw, exc, text", [
    (dict(eps=-1.0), ValueError, "eps must be positive"),
    (dict(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\] or None"),
    (dict(affine="no"), TypeError, "affine must be True or False"),
])
def test_batch_norm1d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        BatchNorm1d(**kw)


@pytest.mark.parametrize("shape, training, kw", [((3, 4), True, dict()), ((2, 3, 5), True, dict(momentum=None)),
                                                 ((1, 2, 3), False, dict()), ((5, 1), True, dict(affine=False))])
def test_batch_norm1d_fenced(shape, training, kw):
    # Every array inside a NaN-marked margin: a read past an array brings NaN, a write past fails.
    rng = np.random.default_rng(shape[0])
    layer = BatchNorm1d(**kw)
    C = shape[1]
    x, gy = rng.standard_normal(shape), rng.standard_normal(shape)
    params = bn_params(C) if layer.affine else {}
    run = run_fenced(layer, [x], gy, params, training=training)
    stats = {} if training else dict(mean=np.zeros(C), var=np.ones(C))
    np.testing.assert_allclose(run.y, bn_ref(x, params.get("weight"), params.get("bias"), **stats),
                               rtol=1e-10, atol=1e-10)
    gx, gw, gb = bn_grads_ref(x, gy, params.get("weight", np.ones(C)), batch_stats=training)
    np.testing.assert_allclose(run.gxs[0], gx, rtol=1e-9, atol=1e-9)
    if layer.affine:
        np.testing.assert_allclose(run.grads["weight"], gw, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(run.grads["bias"], gb, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("shape, kw", [((4, 3), dict(momentum=None)), ((2, 3, 4), dict())])
def test_batch_norm1d_cuda(shape, kw):
    check_layer(BatchNorm1d(**kw), [shape], bn_ref, training=True, params=bn_params(shape[1]), cuda=True,
                threads=False)
