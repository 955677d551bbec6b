"""conv2d on CUDA through column matrices and cuBLAS (NUMBACNN_CUBLAS=1): the row-major to
column-major mapping of every product, and the layer's values and gradients against the CPU's
over groups, strides, dilations and paddings. Under the simulator ``_cublas.gemm`` runs the
column-major call with NumPy; on a GPU it is cuBLAS itself."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _cublas

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_is_the_row_major_product(trans_a, trans_b, beta):
    from numba import cuda

    rng = np.random.default_rng(0)
    M, N, K = 5, 7, 3
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    big = rng.standard_normal((M + 4, N)).astype(np.float32)  # c is a row slice of it
    da, db, dbig = cuda.to_device(a), cuda.to_device(b), cuda.to_device(big)
    _cublas.gemm(da, db, dbig[2:2 + M], trans_a, trans_b, beta)
    want = big.copy()
    want[2:2 + M] = (a.T if trans_a else a) @ (b.T if trans_b else b) + beta * big[2:2 + M]
    np.testing.assert_allclose(dbig.copy_to_host(), want, rtol=1e-5, atol=1e-5)


def cpu_step(g, shape, seed):
    """The CPU's training forward and backward of graph ``g`` on random data of ``shape``:
    (model, x, y, gy, gx)."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal(shape).astype(np.float32)
    cpu = nc.Model(g, seed=0)
    y = cpu.forward(xs, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    return cpu, xs, y, gy, cpu.backward(gy)[0]


CASES = [  # (C, K, H, W, kernel, stride, padding, dilation, groups)
    (2, 3, 6, 5, 3, 1, 1, 1, 1),
    (2, 4, 7, 7, 3, 2, 0, 1, 2),
    (3, 2, 6, 6, (2, 3), (1, 2), (1, 0), 2, 1),
    (4, 4, 4, 4, 1, 1, 0, 1, 4),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "C{}K{}-{}x{}-k{}-s{}-p{}-d{}-g{}".format(*c))
def test_conv2d_through_cublas_matches_the_cpu(monkeypatch, case):
    C, K, H, W, k, s, p, d, G = case
    g = nc.Graph()
    x = g.input((C, H, W))
    g.output(g.conv2d(x, out_channels=K, kernel_size=k, stride=s, padding=p, dilation=d, groups=G, name="c"))
    cpu, xs, y, gy, gx = cpu_step(g, (2, C, H, W), 1)
    monkeypatch.setenv(_cublas.ENV, "1")
    gpu = nc.Model(g, seed=0).to("cuda")
    for _ in range(2):  # the second step reuses the plan's buffers
        gpu.zero_grad()
        got = gpu.forward(xs, training=True)
        got_gx = gpu.backward(gy)[0]
    plan = next(iter(gpu._executor.ctxs["c"]._plans.values()))
    assert plan.path == "cublas"
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_gx, gx, rtol=1e-5, atol=1e-5)
    backend = gpu._executor.backend
    for name in ("c.weight", "c.bias"):
        np.testing.assert_allclose(backend.to_host(gpu.grads[name]), cpu.grads[name], rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    np.testing.assert_allclose(gpu.forward(xs), cpu.forward(xs), rtol=1e-5, atol=1e-5)  # inference: nothing kept


def test_cublas_products_replay_in_a_cuda_graph(monkeypatch):
    from numbacnn import _cuda_graph

    g = nc.Graph()
    x = g.input((2, 5, 5))
    h = g.relu(g.conv2d(x, out_channels=3, kernel_size=3, padding=1, name="c1"))
    g.output(g.linear(g.flatten(g.conv2d(h, out_channels=2, kernel_size=3, name="c2")), out_features=3, name="fc"))
    rng = np.random.default_rng(2)
    monkeypatch.setenv(_cublas.ENV, "1")
    monkeypatch.setenv(_cuda_graph.ENV, "0")
    plain = nc.Model(g, seed=0).to("cuda")
    monkeypatch.setenv(_cuda_graph.ENV, "1")
    graphed = nc.Model(g, seed=0).to("cuda")
    for step in range(3):  # launched, captured, replayed
        xs = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
        gy = rng.standard_normal((2, 3)).astype(np.float32)
        outs = []
        for model in (plain, graphed):
            model.zero_grad()
            y = model.forward(xs, training=True)
            outs.append((y, model.backward(gy)[0], model._executor.backend.to_host(model.grads["c1.weight"])))
        for want, got in zip(*outs):
            np.testing.assert_array_equal(got, want)
    assert next(iter(graphed._executor._plans.values())).replays["forward"].graph is not None


@pytest.mark.parametrize("bias", [True, False])
def test_linear_through_cublas_matches_the_cpu(monkeypatch, bias):
    g = nc.Graph()
    x = g.input((7,))
    g.output(g.linear(x, out_features=4, bias=bias, name="fc"))
    cpu, xs, y, gy, gx = cpu_step(g, (5, 7), 3)
    monkeypatch.setenv(_cublas.ENV, "1")
    gpu = nc.Model(g, seed=0).to("cuda")
    got = gpu.forward(xs, training=True)
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu.backward(gy)[0], gx, rtol=1e-5, atol=1e-6)
    for name in cpu.grads:
        np.testing.assert_allclose(gpu._executor.backend.to_host(gpu.grads[name]), cpu.grads[name], rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_gemm_refuses_a_strided_operand():
    from numba import cuda

    a = cuda.to_device(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _cublas.gemm(a[:, :3], a[:3], cuda.to_device(np.zeros((4, 6), np.float32)))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_reads_and_writes_rows_of_larger_arrays_in_place(trans_a, trans_b):
    # Rows(base, start, stop, cols): the conv path's operands (a group's weights, columns and
    # products) without numba views; the arrays around the rows are left as they were.
    from numba import cuda

    rng = np.random.default_rng(1)
    M, N, K = 4, 6, 3
    a_rows, b_rows = (K, M) if trans_a else (M, K), (N, K) if trans_b else (K, N)
    a = rng.standard_normal((2, 5, a_rows[1])).astype(np.float32)  # rows 5..5+a_rows[0] of the flattened
    b = rng.standard_normal((3, b_rows[0], b_rows[1])).astype(np.float32)  # the middle block
    c = rng.standard_normal((3, M, N)).astype(np.float32)
    da, db, dc = cuda.to_device(a), cuda.to_device(b), cuda.to_device(c)
    fa, fb = a.reshape(-1, a_rows[1]), b.reshape(-1, b_rows[1])
    _cublas.gemm(_cublas.Rows(da, 5, 5 + a_rows[0], a_rows[1]), _cublas.Rows(db, b_rows[0], 2 * b_rows[0], b_rows[1]),
                 _cublas.Rows(dc, 2 * M, 3 * M, N), trans_a, trans_b, beta=1.0)
    op = lambda m, t: m.T if t else m  # noqa: E731
    want = c.copy()
    want[2] += op(fa[5:5 + a_rows[0]], trans_a) @ op(fb[b_rows[0]:2 * b_rows[0]], trans_b)
    np.testing.assert_allclose(dc.copy_to_host(), want, rtol=1e-5, atol=1e-5)


def test_gemm_refuses_rows_past_the_array_and_mismatched_shapes():
    from numba import cuda

    a = cuda.to_device(np.zeros((4, 6), np.float32))
    c = cuda.to_device(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="must lie in"):
        _cublas.gemm(_cublas.Rows(a, 2, 6, 6), a, c, trans_b=True)
    with pytest.raises(ValueError, match="does not give"):
        _cublas.gemm(a, a, c)  # (4x6)(4x6)


def test_a_convolution_whose_columns_would_be_too_large_runs_implicit_gemm(monkeypatch):
    from numbacnn.layers import conv2d_cuda

    monkeypatch.setenv(_cublas.ENV, "1")
    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)  # groups, R, S, strides, dilations, paddings
    x_shape, y_shape = (2, 4, 8, 8), (2, 5, 8, 8)
    columns = 1 * 4 * 9 * 2 * 8 * 8 * 4  # bytes of float32 columns
    monkeypatch.setattr(conv2d_cuda, "COLUMNS_MAX_BYTES", columns)
    assert conv2d_cuda.conv2d_plan("c", x_shape, y_shape, geo, True, np.float32).path == "cublas"
    monkeypatch.setattr(conv2d_cuda, "COLUMNS_MAX_BYTES", columns - 1)
    assert conv2d_cuda.conv2d_plan("c", x_shape, y_shape, geo, True, np.float32).path == "implicit-gemm"
