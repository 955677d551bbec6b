import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def linear_ref(x, weight, bias=None):
    N, J = x.shape
    K = weight.shape[0]
    y = np.zeros((N, K))
    for n in range(N):
        for k in range(K):
            for j in range(J):
                y[n, k] += x[n, j] * weight[k, j]
            if bias is not None:
                y[n, k] += bias[k]
    return y


BAD = [
    ([(2, 3, 4, 4)], "linear expects a flat input (features,), found (3, 4, 4); put flatten before it"),
    ([(2, 3, 4)], "found (3, 4)"),
]


# Sizes cross the CUDA tile (16) and are odd so that every edge case of the tiling is used.
@pytest.mark.parametrize("shape, out_features, bias", [
    ((1, 1), 1, True), ((1, 7), 3, False), ((5, 33), 17, True), ((4, 10), 1, False),
])
def test_linear_cpu(shape, out_features, bias):
    check_layer(nc.get_layer("linear")(out_features, bias=bias), [shape], linear_ref, bad_shapes=BAD)


def test_linear_parameters_follow_torch():
    g = nc.Graph()
    g.output(g.linear(g.input((400,)), out_features=300, name="fc"))
    model = nc.Model(g, seed=3)
    w, b = model.params["fc.weight"], model.params["fc.bias"]
    assert w.shape == (300, 400) and b.shape == (300,) and w.dtype == np.float32
    bound = 1 / math.sqrt(400)
    for p in (w, b):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.95 * bound  # uniform over the whole range
    assert abs(float(w.mean())) < 0.01 * bound and abs(float(w.std()) - bound / math.sqrt(3)) < 0.02 * bound
    assert model.flops() == 2 * 400 * 300 + 300
    g = nc.Graph()
    g.output(g.linear(g.input((400,)), out_features=300, bias=False, name="fc"))
    model = nc.Model(g)
    assert list(model.params) == ["fc.weight"] and model.flops() == 2 * 400 * 300


@pytest.mark.parametrize("kwargs, error, text", [
    ({"out_features": 0}, ValueError, "out_features"),
    ({"out_features": -2}, ValueError, "out_features"),
    ({"out_features": 2.0}, TypeError, "out_features"),
    ({"out_features": True}, TypeError, "out_features"),
    ({"out_features": 3, "bias": "yes"}, TypeError, "bias"),
])
def test_linear_rejects_bad_hyper_parameters(kwargs, error, text):
    with pytest.raises(error, match=text):
        nc.get_layer("linear")(**kwargs)


def test_linear_without_input_gradient_still_fills_its_parameter_gradients():
    g = nc.Graph()
    g.output(g.linear(g.input((6,)), out_features=4, name="fc"))
    model = nc.Model(g, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 6))
    gy = np.random.default_rng(1).standard_normal((3, 4))
    model.forward(x, training=True)
    assert model.backward(gy, input_grad=False) is None
    np.testing.assert_allclose(model.grads["fc.weight"], gy.T @ x, rtol=1e-12)
    model.forward(x, training=True)
    model.backward(gy)  # gradients accumulate until zero_grad, as in PyTorch
    np.testing.assert_allclose(model.grads["fc.weight"], 2 * gy.T @ x, rtol=1e-12)
    np.testing.assert_allclose(model.grads["fc.bias"], 2 * gy.sum(0), rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias):
    torch = pytest.importorskip("torch")
    g = nc.Graph()
    g.output(g.linear(g.input((20,)), out_features=7, bias=bias, name="fc"))
    model = nc.Model(g, seed=1)
    x = np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32)
    gy = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    lin = torch.nn.Linear(20, 7, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(model.params["fc.weight"]))
        if bias:
            lin.bias.copy_(torch.from_numpy(model.params["fc.bias"]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = lin(xt)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.grads["fc.weight"], lin.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    if bias:
        np.testing.assert_allclose(model.grads["fc.bias"], lin.bias.grad.numpy(), rtol=1e-5, atol=1e-6)


# The simulator runs every thread of a 16 x 16 block in Python: one shape crosses the tile
# edges in every dimension, the other stays small.
@pytest.mark.cuda
@pytest.mark.parametrize("shape, out_features, bias", [((3, 20), 17, True), ((2, 5), 3, False)])
def test_linear_cuda(shape, out_features, bias):
    check_layer(nc.get_layer("linear")(out_features, bias=bias), [shape], linear_ref, cuda=True, threads=False)


@pytest.mark.parametrize("N", [1, 7, 600])
def test_linear_cpu_matches_numpy_on_short_and_long_chunks(N):
    # The CPU forward multiplies a chunk of up to 64 rows turned around (w @ x^T, then copied)
    # and a longer one directly; 600 rows make chunks longer than 64 on up to 9 threads.
    from numbacnn.layers import linear_cpu

    (T, *turned), part = linear_cpu.linear_scratch(N, 3, 5)
    rows = -(-N // T)
    assert turned == ([3, rows] if rows <= 64 else [0, 0]) and part == (T - 1, 3, 5)
    g = nc.Graph()
    g.output(g.linear(g.input((5,)), out_features=3, name="fc"))
    model = nc.Model(g, dtype="float64", seed=2)
    w, b = model.params["fc.weight"], model.params["fc.bias"]
    x = np.random.default_rng(0).standard_normal((N, 5))
    gy = np.random.default_rng(1).standard_normal((N, 3))
    np.testing.assert_allclose(model.forward(x, training=True), x @ w.T + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.backward(gy), gy @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.grads["fc.weight"], gy.T @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.grads["fc.bias"], gy.sum(0), rtol=1e-12, atol=1e-12)


# The CPU kernels run one chunk (T = 1) in the calling thread and several under prange; the
# reduce adds the partials and the bias gradient serially below PARALLEL_MIN values (partials
# plus gy) and in parallel from there. Each case is on one side: (N, K, J, T, reduce values).
def _reduce_cases():
    from numbacnn._threads import PARALLEL_MIN

    J2 = (PARALLEL_MIN - 4 * 16) // 16  # one partial (16, J2) and gy (4, 16): PARALLEL_MIN
    K1 = PARALLEL_MIN // 4  # no partial, gy (4, K1): PARALLEL_MIN
    return [(1, 10, 100, 1, "serial"), (10, 10, 100, 1, "serial"), (10, 100, 640, 2, "serial"),
            (7, 3, 5, 3, "serial"), (4, 16, J2 - 1, 2, "serial"), (4, 16, J2, 2, "parallel"),
            (4, K1 - 1, 3, 1, "serial"), (4, K1, 3, 1, "parallel")]


@pytest.mark.parametrize("N, K, J, T, side", _reduce_cases())
def test_linear_cpu_kernels_on_one_chunk_and_both_sides_of_parallel_min(N, K, J, T, side):
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import linear_cpu

    assert ((T - 1) * K * J + N * K < PARALLEL_MIN) == (side == "serial")
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((N, J)), rng.standard_normal((K, J)), rng.standard_normal(K)
    x[N - 1, J - 1] = np.nan  # a NaN in the last chunk reaches its output row and one gw column
    gy = rng.standard_normal((N, K))
    y = np.full((N, K), 7.0)
    linear_cpu.linear_forward(x, w, b, y, np.empty((T, K, -(-N // T))))
    want_y = np.array([[sum(x[n, j] * w[k, j] for j in range(J)) + b[k] for k in range(K)]
                       for n in range(N)]) if K * J * N < 10000 else x @ w.T + b
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    assert np.isnan(y[N - 1]).all() and not np.isnan(y[:N - 1]).any()
    gw, gb = np.ones((K, J)), np.ones(K)  # backward accumulates into them
    gx = np.full((N, J), 7.0)
    linear_cpu.linear_backward(x, w, gy, gw, gb, np.empty((T - 1, K, J)), gx)
    np.testing.assert_allclose(gx, gy @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, 1 + gy.T @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, 1 + gy.sum(0), rtol=1e-12, atol=1e-12)
    assert np.isnan(gw[:, J - 1]).all() and not np.isnan(gw[:, :J - 1]).any()


def test_linear_cpu_backward_cuts_the_outputs_up_to_a_batch_of_256(monkeypatch):
    # Up to 256 samples and from PARALLEL_MIN multiply-adds, the backward's chunks cut gw's rows
    # (gb's sums with them) and gx's columns, each product over the whole batch; past either
    # bound, the batch (partials summed after), and one thread keeps one chunk.
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import linear_cpu

    monkeypatch.setattr(linear_cpu, "batch_chunks", lambda n: max(1, min(3, n)))  # as on 3 threads
    assert linear_cpu.linear_scratch(32, 256, 2048)[1] == (2, 0, 0)
    assert linear_cpu.linear_scratch(256, 100, 640)[1] == (2, 0, 0)
    assert linear_cpu.linear_scratch(257, 100, 640)[1] == (2, 100, 640)  # the batch's chunks
    assert linear_cpu.linear_scratch(32, 2, 2048)[1] == (1, 0, 0)  # at most K chunks
    small = PARALLEL_MIN // (16 * 64)
    assert linear_cpu.linear_scratch(small, 16, 64)[1] == (2, 0, 0)
    assert linear_cpu.linear_scratch(small - 1, 16, 64)[1] == (2, 16, 64)
    monkeypatch.setattr(linear_cpu, "batch_chunks", lambda n: 1)  # one thread
    assert linear_cpu.linear_scratch(32, 256, 2048)[1] == (0, 256, 2048)


def test_linear_cpu_forward_cuts_the_outputs_below_the_thread_count(monkeypatch):
    # Fewer samples than threads (batch-1 inference) and FORWARD_SPLIT_MIN_MACS multiply-adds:
    # the forward's scratch (S, 0, 1) cuts the outputs into S chunks, at most K; else one
    # chunk of the batch (a training step's scratch is the same: it runs the same forward).
    from numbacnn.layers import linear_cpu

    monkeypatch.setattr(linear_cpu, "batch_chunks", lambda n: max(1, min(3, n)))  # as on 3 threads
    big = linear_cpu.FORWARD_SPLIT_MIN_MACS
    assert linear_cpu.linear_scratch(1, 256, 2048)[0] == (3, 0, 1)
    assert linear_cpu.linear_scratch(2, 256, 2048)[0] == (3, 0, 1)
    assert linear_cpu.linear_scratch(1, 2, big)[0] == (2, 0, 1)  # at most K chunks
    assert linear_cpu.linear_scratch(1, 16, big // 16)[0] == (3, 0, 1)
    assert linear_cpu.linear_scratch(1, 16, big // 16 - 1)[0] == (1, 16, 1)  # under it: one chunk
    assert linear_cpu.linear_scratch(3, 256, 2048)[0] == (3, 256, 1)  # a chunk a sample
    monkeypatch.setattr(linear_cpu, "batch_chunks", lambda n: 1)  # one thread
    assert linear_cpu.linear_scratch(1, 256, 2048)[0] == (1, 256, 1)


@pytest.mark.parametrize("N, K, J, S", [(1, 7, 11, 2), (1, 7, 11, 3), (1, 2, 9, 2), (1, 13, 37, 2), (3, 5, 6, 2),
                                        (1, 300, 260, 2)])
@pytest.mark.parametrize("bias, relu", [(True, False), (False, True), (True, True)])
def test_linear_cpu_forward_by_outputs_matches_numpy(N, K, J, S, bias, relu):
    # S chunks of K outputs that S does not divide evenly; one sample takes w's rows times x
    # (linear_cpu._rows_dot), more the product. relu's rule: NaN kept, -0.0 to 0.
    from numbacnn.layers import linear_cpu

    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((N, J)), rng.standard_normal((K, J)), rng.standard_normal(K if bias else 0)
    w[K - 1, J - 1] = np.nan  # reaches the last output of every sample, and no other
    if not bias:
        w[0] = -0.0  # output 0 is -0.0 + ... = -0.0 before the relu (no bias added)
        x[:, 0] = 1.0
    y = np.full((N, K), 7.0)
    linear_cpu.linear_forward(x, w, b, y, np.empty((S, 0, 1)), relu)
    want = np.array([[sum(x[n, j] * w[k, j] for j in range(J)) for k in range(K)] for n in range(N)]) \
        if N * K * J < 10000 else x @ w.T
    if bias:
        want = want + b
    if relu:
        want = np.where(want <= 0, 0.0, want)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert np.isnan(y[:, K - 1]).all() and not np.isnan(y[:, :K - 1]).any()
    if relu and not bias:
        assert not np.signbit(y[:, 0]).any()


@pytest.mark.parametrize("K, S", [(11, 2), (3, 2), (16, 3)])
def test_linear_cpu_batch_of_one_float32_sums_rows_in_lanes(K, S):
    # A batch of one: each output a row of w times x (_rows_dot, four rows a pass and the rest
    # one at a time, its sums reordered into vector lanes), float32 arrays, against float64
    # sums; an Inf in x gives every output PyTorch's Inf or NaN (Inf - Inf), rows apart.
    from numbacnn.layers import linear_cpu

    rng = np.random.default_rng(9)
    J = 301
    x, w = rng.standard_normal((1, J), dtype=np.float32), rng.standard_normal((K, J), dtype=np.float32)
    y = np.full((1, K), 7.0, np.float32)
    linear_cpu.linear_forward(x, w, np.empty(0, np.float32), y, np.empty((S, 0, 1), np.float32))
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    x[0, 5], w[K - 1, 7] = np.inf, np.inf  # row K - 1 meets Inf twice: Inf or NaN, as the float64 sum
    linear_cpu.linear_forward(x, w, np.empty(0, np.float32), y, np.empty((S, 0, 1), np.float32))
    with np.errstate(invalid="ignore"):  # Inf - Inf, on purpose
        want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y) & (y > 0), np.isinf(want) & (want > 0))


@pytest.mark.parametrize("N, K, J, S", [(5, 7, 11, 2), (5, 7, 11, 3), (3, 2, 9, 2), (40, 300, 260, 2)])
@pytest.mark.parametrize("want_gx, bias", [(True, True), (False, False)])
def test_linear_cpu_backward_by_outputs_matches_numpy(N, K, J, S, want_gx, bias):
    # S chunks of K rows and J columns that S does not divide evenly; a NaN in x reaches one
    # column of gw and no row of gx (gx = gy w does not read x).
    from numbacnn.layers import linear_cpu

    rng = np.random.default_rng(4)
    x, w, gy = rng.standard_normal((N, J)), rng.standard_normal((K, J)), rng.standard_normal((N, K))
    x[N - 1, J - 1] = np.nan
    gw, gb = np.ones((K, J)), np.ones(K if bias else 0)  # backward accumulates into them
    gx = np.full((N, J), 7.0) if want_gx else None
    linear_cpu.linear_backward(x, w, gy, gw, gb, np.empty((S - 1, 0, 0)), gx)
    want_gw = 1 + np.array([[sum(gy[n, k] * x[n, j] for n in range(N)) for j in range(J)] for k in range(K)]) \
        if N * K * J < 10000 else 1 + gy.T @ x
    np.testing.assert_allclose(gw, want_gw, rtol=1e-12, atol=1e-12)
    assert np.isnan(gw[:, J - 1]).all() and not np.isnan(gw[:, :J - 1]).any()
    if bias:
        np.testing.assert_allclose(gb, 1 + gy.sum(0), rtol=1e-12, atol=1e-12)
    if want_gx:
        np.testing.assert_allclose(gx, gy @ w, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
def test_linear_cuda_cuts_the_weight_gradient_into_slices(monkeypatch):
    # 33 rows: the weight gradient's reduction runs in two slices (one into gw, one partial
    # that a second kernel adds), each crossing the 16-row tile. (cuBLAS's product needs none.)
    from numbacnn import _cublas
    from numbacnn.layers import linear_cuda

    monkeypatch.setenv(_cublas.ENV, "0")

    assert linear_cuda.linear_scratch(33, 2, 3)[1] == (1, 2, 3)
    check_layer(nc.get_layer("linear")(2), [(33, 3)], linear_ref, cuda=True, threads=False)
