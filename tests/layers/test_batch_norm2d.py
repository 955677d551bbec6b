from functools import partial

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer

BatchNorm2d = nc.get_layer("batch_norm2d")


class StatsBatchNorm2d(BatchNorm2d):
    """BatchNorm2d whose running statistics start away from (0, 1), for evaluation checks."""

    def init_buffers(self, input_shapes):
        C = input_shapes[0][0]
        return {"running_mean": np.linspace(-1.0, 1.5, C), "running_var": np.linspace(0.25, 2.0, C)}


def batch_stats_ref(x):
    N, C, H, W = x.shape
    mean, var = np.zeros(C), np.zeros(C)
    for c in range(C):
        values = [x[n, c, h, w] for n in range(N) for h in range(H) for w in range(W)]
        mean[c] = sum(values) / len(values)
        var[c] = sum((v - mean[c]) ** 2 for v in values) / len(values)  # biased
    return mean, var


def normalise_ref(x, mean, var, eps, weight=None, bias=None):
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        y[:, c] = (x[:, c] - mean[c]) / np.sqrt(var[c] + eps)
        if weight is not None:
            y[:, c] = y[:, c] * weight[c] + bias[c]
    return y


def train_ref(x, weight=None, bias=None, eps=1e-5):
    return normalise_ref(x, *batch_stats_ref(x), eps, weight, bias)


def eval_ref(x, weight=None, bias=None, eps=1e-5):
    C = x.shape[1]
    return normalise_ref(x, np.linspace(-1.0, 1.5, C), np.linspace(0.25, 2.0, C), eps, weight, bias)


def _params(C, seed=3):
    rng = np.random.default_rng(seed)
    return {"weight": rng.uniform(0.5, 2.0, C), "bias": rng.standard_normal(C)}


@pytest.mark.parametrize("shape", [(3, 4, 5, 4), (1, 3, 4, 5), (4, 2, 1, 1), (2, 1, 3, 3)])
def test_batch_norm2d_training_cpu(shape):
    check_layer(BatchNorm2d(), [shape], train_ref, training=True, params=_params(shape[1]), cuda=False,
                bad_shapes=[([(2, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                            ([(2, 6)], "expected an input of shape (C, H, W), found (6,)")])


def test_batch_norm2d_training_options_cpu():
    check_layer(BatchNorm2d(eps=1e-3, momentum=0.5, affine=False), [(2, 3, 3, 3)],
                partial(train_ref, eps=1e-3), training=True, cuda=False)


@pytest.mark.parametrize("shape", [(3, 4, 5, 4), (1, 3, 2, 1)])
def test_batch_norm2d_eval_cpu(shape):
    check_layer(StatsBatchNorm2d(), [shape], eval_ref, params=_params(shape[1]), cuda=False)


def test_batch_norm2d_eval_without_affine_cpu():
    check_layer(StatsBatchNorm2d(affine=False), [(2, 3, 4, 4)], eval_ref, cuda=False)


def test_batch_norm2d_eval_without_running_stats_uses_the_batch_cpu():
    check_layer(BatchNorm2d(track_running_stats=False), [(2, 3, 4, 4)], train_ref, params=_params(3), cuda=False)


def _model(layer, shape, dtype="float32", device="cpu"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="bn"))
    return nc.Model(g, dtype=dtype, device=device)


def test_batch_norm2d_running_stats_update():
    rng = np.random.default_rng(5)
    model = _model(BatchNorm2d(momentum=0.25), (4, 3, 3, 2), "float64")
    mean, var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.standard_normal((4, 3, 3, 2)) * (step + 1) + step
        model.forward(x, training=True)
        m, v = batch_stats_ref(x)
        M = 4 * 3 * 2
        mean = 0.75 * mean + 0.25 * m
        var = 0.75 * var + 0.25 * v * M / (M - 1)  # the running variance is unbiased
        np.testing.assert_allclose(model.buffers["bn.running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(model.buffers["bn.running_var"], var, rtol=1e-12)
    model.forward(x, training=False)  # evaluation leaves them alone
    np.testing.assert_allclose(model.buffers["bn.running_var"], var, rtol=1e-12)


def test_batch_norm2d_momentum_none_is_the_cumulative_average():
    # PyTorch's momentum=None: the t-th batch moves the running statistics by 1/t, so they are
    # the plain mean of every batch's statistics so far (the variances unbiased).
    rng = np.random.default_rng(6)
    model = _model(BatchNorm2d(momentum=None), (4, 3, 3, 2), "float64")
    assert model.buffers["bn.num_batches_tracked"].tolist() == [0.0]
    means, variances = [], []
    for step in range(4):
        x = rng.standard_normal((4, 3, 3, 2)) * (step + 1) + step
        model.forward(x, training=True)
        m, v = batch_stats_ref(x)
        means.append(m)
        variances.append(v * 24 / 23)
        np.testing.assert_allclose(model.buffers["bn.running_mean"], np.mean(means, axis=0), rtol=1e-12)
        np.testing.assert_allclose(model.buffers["bn.running_var"], np.mean(variances, axis=0), rtol=1e-12)
        assert model.buffers["bn.num_batches_tracked"].tolist() == [step + 1.0]
    model.forward(x, training=False)  # evaluation neither moves nor counts
    assert model.buffers["bn.num_batches_tracked"].tolist() == [4.0]
    np.testing.assert_allclose(model.buffers["bn.running_mean"], np.mean(means, axis=0), rtol=1e-12)


def _torch_step(torch, bn, x, gy):
    tx = torch.tensor(x, requires_grad=True)
    ty = bn(tx)
    ty.backward(torch.tensor(gy))
    grads = {"weight": bn.weight.grad.numpy().copy(), "bias": bn.bias.grad.numpy().copy()} if bn.affine else {}
    bn.zero_grad()
    return ty.detach().numpy(), tx.grad.numpy(), grads


@pytest.mark.parametrize("kw", [dict(), dict(eps=1e-3, momentum=0.3), dict(affine=False),
                                dict(track_running_stats=False), dict(momentum=None)])
def test_batch_norm2d_matches_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    C = 4
    model = _model(BatchNorm2d(**kw), (2, C, 5, 3))
    tbn = torch.nn.BatchNorm2d(C, **kw)
    if tbn.affine:
        p = _params(C)
        for key in ("weight", "bias"):
            model.params[f"bn.{key}"][...] = p[key]
            getattr(tbn, key).data[...] = torch.tensor(p[key], dtype=torch.float32)
    for training in (True, True, True, False):
        tbn.train(training)
        x = (rng.standard_normal((2, C, 5, 3)) * 3 + 2).astype(np.float32)
        gy = rng.standard_normal(x.shape).astype(np.float32)
        model.zero_grad()
        y = model.forward(x, training=training, grad=True)
        gx = model.backward(gy)
        ty, tgx, tgrads = _torch_step(torch, tbn, x, gy)
        np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gx, tgx, rtol=1e-4, atol=1e-5)
        for key, value in tgrads.items():
            np.testing.assert_allclose(model.grads[f"bn.{key}"], value, rtol=1e-4, atol=1e-4)
        if tbn.track_running_stats:
            np.testing.assert_allclose(model.buffers["bn.running_mean"], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(model.buffers["bn.running_var"], tbn.running_var.numpy(), rtol=1e-5, atol=1e-6)
            if tbn.momentum is None:
                assert model.buffers["bn.num_batches_tracked"][0] == tbn.num_batches_tracked.item()
        else:
            assert model.buffers == {}


def test_batch_norm2d_float32_far_from_zero():
    # Data with a large mean next to its spread: the kernels subtract the mean before scaling.
    x = (np.random.default_rng(9).standard_normal((8, 2, 6, 6)) + 300.0).astype(np.float32)
    y = _model(BatchNorm2d(), x.shape).forward(x, training=True)
    np.testing.assert_allclose(y, train_ref(x.astype(np.float64)), atol=2e-4)


def test_batch_norm2d_weight_gradients_without_input_gradient():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    model = _model(BatchNorm2d(), x.shape)
    model.forward(x, training=True)
    model.backward(gy)
    full = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    model.forward(x, training=True)
    assert model.backward(gy, input_grad=False) is None
    for key, value in full.items():
        np.testing.assert_array_equal(model.grads[key], value)


def test_batch_norm2d_needs_more_than_one_value_per_channel():
    model = _model(BatchNorm2d(), (1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"batch_norm2d node 'bn': expected more than 1 value per channel"):
        model.forward(np.ones((1, 3, 1, 1), np.float32), training=True)
    model.forward(np.ones((1, 3, 1, 1), np.float32), training=False)  # running statistics: fine


def test_batch_norm2d_parameters_buffers_and_flops():
    g = nc.Graph()
    h = g.batch_norm2d(g.input((3, 4, 4)), name="bn1")
    model = nc.Model(g)
    assert h.config == {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
    np.testing.assert_array_equal(model.params["bn1.weight"], np.ones(3, np.float32))
    np.testing.assert_array_equal(model.params["bn1.bias"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(model.buffers["bn1.running_mean"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(model.buffers["bn1.running_var"], np.ones(3, np.float32))
    assert model.flops() == 4 * 3 * 16
    bare = _model(BatchNorm2d(affine=False, track_running_stats=False), (1, 3, 4, 4))
    assert bare.params == {} and bare.buffers == {}


@pytest.mark.parametrize("kw, exc, text", [
    (dict(eps=0.0), ValueError, "eps must be positive"),
    (dict(eps="small"), TypeError, "eps must be a number"),
    (dict(momentum=1.5), ValueError, r"momentum must be in \[0, 1\] or None"),
    (dict(momentum="fast"), TypeError, "momentum must be a number"),
    (dict(affine=1), TypeError, "affine must be True or False"),
    (dict(track_running_stats="yes"), TypeError, "track_running_stats must be True or False"),
])
def test_batch_norm2d_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        BatchNorm2d(**kw)


@pytest.mark.cuda
def test_batch_norm2d_cuda_training():
    check_layer(BatchNorm2d(), [(2, 3, 3, 3)], train_ref, training=True, params=_params(3),
                cuda=True, threads=False)


@pytest.mark.cuda
def test_batch_norm2d_cuda_with_the_gpu_block(monkeypatch):
    # A GPU sums each channel with 256 threads; the simulator defaults to fewer, so here it
    # runs the GPU's, on channels of 288 values (two strided passes for some threads).
    from numbacnn.device import is_simulator
    from numbacnn.layers import batch_norm2d_cuda

    if is_simulator():
        monkeypatch.setattr(batch_norm2d_cuda, "REDUCE", batch_norm2d_cuda.GPU_REDUCE)
    assert batch_norm2d_cuda.REDUCE == 256
    check_layer(BatchNorm2d(), [(2, 1, 12, 12)], train_ref, training=True, params=_params(1),
                cuda=True, threads=False)


@pytest.mark.cuda
def test_batch_norm2d_cuda_eval():
    check_layer(StatsBatchNorm2d(), [(2, 3, 2, 3)], eval_ref, params=_params(3), cuda=True, threads=False)


@pytest.mark.cuda
def test_batch_norm2d_cuda_without_affine():
    check_layer(BatchNorm2d(affine=False), [(2, 2, 3, 3)], train_ref, training=True, cuda=True, threads=False)


@pytest.mark.cuda
@pytest.mark.parametrize("momentum", [0.2, None])
def test_batch_norm2d_cuda_running_stats_match_cpu(momentum):
    # 2 x 15 x 15 = 450 values per channel: more than one block's threads, so the strided
    # per-thread sums and the shared-memory tree both run.
    rng = np.random.default_rng(13)
    shape = (2, 2, 15, 15)
    cpu = _model(BatchNorm2d(momentum=momentum), shape)
    gpu = _model(BatchNorm2d(momentum=momentum), shape, device="cuda")
    for _ in range(3):
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        gy = rng.standard_normal(shape).astype(np.float32)
        for model in (cpu, gpu):
            model.zero_grad()
        np.testing.assert_allclose(gpu.forward(x, training=True), cpu.forward(x, training=True), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gpu.backward(gy), cpu.backward(gy), rtol=1e-5, atol=1e-5)
    c, g = cpu.state(), gpu.state()
    assert c.keys() == g.keys()
    for key in c:
        np.testing.assert_allclose(g[key], c[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_batch_norm2d_statistics_propagate_nan_and_inf():
    # The CPU reductions opt into reassociation (vectorised float64 sums) but not nnan/ninf:
    # a NaN or Inf in one channel still reaches that channel's output and no other.
    g = nc.Graph()
    g.output(g.batch_norm2d(g.input((3, 4, 4)), name="bn"))
    m = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    x[1, 0, 2, 3] = np.nan
    x[0, 2, 1, 1] = np.inf
    y = m.forward(x, training=True)
    assert np.isnan(y[:, 0]).all() and np.isnan(y[:, 2]).any()
    assert np.isfinite(y[:, 1]).all()
