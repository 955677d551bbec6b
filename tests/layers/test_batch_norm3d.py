"""batch_norm3d: batch_norm2d's kernels on (N, C, D*H*W) views, as torch.nn.BatchNorm3d."""

from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

from _bn_cases import bn_model, bn_params, check_bn_matches_torch

BatchNorm3d = nc.get_layer("batch_norm3d")


def bn_ref(x, weight=None, bias=None, eps=1e-5, mean=None, var=None):
    """y from loops over each channel's N*D*H*W values; the batch's biased statistics unless
    ``mean``/``var`` are given."""
    N, C, D, H, W = x.shape
    y = np.empty_like(x)
    for c in range(C):
        values = [x[n, c, d, h, w] for n in range(N) for d in range(D) for h in range(H) for w in range(W)]
        m = sum(values) / len(values) if mean is None else mean[c]
        v = sum((u - m) ** 2 for u in values) / len(values) if var is None else var[c]
        y[:, c] = (x[:, c] - m) / np.sqrt(v + eps)
        if weight is not None:
            y[:, c] = y[:, c] * weight[c] + bias[c]
    return y


@pytest.mark.parametrize("shape", [(2, 3, 2, 3, 4), (1, 2, 3, 1, 5), (3, 1, 1, 1, 1)])
def test_batch_norm3d_training_cpu(shape):
    check_layer(BatchNorm3d(), [shape], bn_ref, training=True, params=bn_params(shape[1]), cuda=False,
                bad_shapes=[([(2, 3, 4, 5)], "expected an input of shape (C, D, H, W), found (3, 4, 5)"),
                            ([(2, 3)], "expected an input of shape (C, D, H, W), found (3,)")])


def test_batch_norm3d_eval_cpu():
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.3])

    class Stats(BatchNorm3d):
        def init_buffers(self, input_shapes):
            return {"running_mean": mean, "running_var": var}

    check_layer(Stats(), [(2, 2, 3, 2, 3)], partial(bn_ref, mean=mean, var=var), params=bn_params(2), cuda=False)


# (options, input shape, dtype): odd sizes, batch 1, every option
TORCH = [
    (dict(), (2, 3, 3, 5, 4), "float32"),
    (dict(), (1, 4, 2, 3, 3), "float64"),
    (dict(eps=1e-3, momentum=0.3), (3, 2, 1, 3, 5), "float32"),
    (dict(momentum=None), (2, 3, 2, 2, 3), "float64"),
    (dict(momentum=None, affine=False), (1, 2, 3, 3, 3), "float32"),
    (dict(track_running_stats=False), (2, 2, 3, 1, 3), "float32"),
]


@pytest.mark.parametrize("kw, shape, dtype", TORCH)
def test_batch_norm3d_matches_torch(kw, shape, dtype):
    check_bn_matches_torch("BatchNorm3d", BatchNorm3d(**kw), kw, shape, dtype, np.random.default_rng(sum(shape)),
                           trainings=(True, True, False), scale=2, shift=-1)


def test_batch_norm3d_needs_more_than_one_value_per_channel():
    model = bn_model(BatchNorm3d(), (1, 2, 1, 1, 1))
    with pytest.raises(ValueError, match=r"batch_norm3d node 'bn': expected more than 1 value per channel"):
        model.forward(np.ones((1, 2, 1, 1, 1), np.float32), training=True)


def test_batch_norm3d_builder_and_flops():
    g = nc.Graph()
    h = g.batch_norm3d(g.input((3, 2, 4, 5)), affine=False, name="bn1")
    model = nc.Model(g)
    assert h.config == {"eps": 1e-5, "momentum": 0.1, "affine": False, "track_running_stats": True}
    assert model.params == {} and sorted(model.buffers) == ["bn1.running_mean", "bn1.running_var"]
    assert model.flops() == 4 * 3 * 2 * 4 * 5


@pytest.mark.parametrize("shape, training", [((2, 3, 2, 1, 3), True), ((1, 2, 1, 2, 2), False)])
def test_batch_norm3d_fenced(shape, training):
    rng = np.random.default_rng(shape[0])
    C = shape[1]
    x, gy = rng.standard_normal(shape), rng.standard_normal(shape)
    run = run_fenced(BatchNorm3d(), [x], gy, bn_params(C), training=training)
    stats = {} if training else dict(mean=np.zeros(C), var=np.ones(C))
    np.testing.assert_allclose(run.y, bn_ref(x, **bn_params(C), **stats), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(run.grads["bias"], gy.sum(axis=(0, 2, 3, 4)), rtol=1e-10, atol=1e-10)
    if not training:  # fixed statistics (0, 1): gx = weight / sqrt(1 + eps) * gy
        k = bn_params(C)["weight"] / np.sqrt(1 + 1e-5)
        np.testing.assert_allclose(run.gxs[0], k[None, :, None, None, None] * gy, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
def test_batch_norm3d_cuda():
    check_layer(BatchNorm3d(momentum=None), [(2, 2, 2, 3, 2)], bn_ref, training=True, params=bn_params(2), cuda=True,
                threads=False)
