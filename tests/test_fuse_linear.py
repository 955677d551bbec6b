"""Inference's linear + relu fusion (numbacnn._fold.relu_pairs): the linear's chunks take their
rows through relu's rule after their product, and the relu node passes y on. Bit for bit the
unfused model's answer, on both of the CPU forward's routes (a chunk's product turned around
through scratch, up to 64 rows a chunk, and the direct one), at batch 1 and on threads."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _fold


def _mlp() -> nc.Graph:
    # x -> fc1 -> r1 -> fc2 -> r2 (a graph output: fused all the same) -> fc3 ; r1 also read by
    # nothing else. fc3's relu "r3x" reads fc3 but fc3 is also an output: not fused.
    g = nc.Graph()
    h = g.relu(g.linear(g.input((12,)), out_features=9, name="fc1"), name="r1")
    r2 = g.relu(g.linear(h, out_features=7, name="fc2"), name="r2")
    fc3 = g.linear(r2, out_features=5, name="fc3")
    g.output(r2, fc3, g.relu(fc3, name="r3x"))
    return g


def _models(dtype: str, monkeypatch: pytest.MonkeyPatch) -> tuple[nc.Model, nc.Model]:
    models = []
    for fuse in ("1", "0"):
        monkeypatch.setenv("NUMBACNN_FUSE_RELU", fuse)
        models.append(nc.Model(_mlp(), seed=3, dtype=dtype))
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    return models[0], models[1]


def _fused(model: nc.Model) -> list[str]:
    ex = model._executor
    return [name for (_, _, layer, name), f in zip(ex._steps, ex._inference) if layer == "relu" and f is _fold.skip]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 3, 150, 300])  # on 2 threads 150 and 300 take the direct route
def test_a_relu_after_a_linear_runs_inside_it_bit_for_bit(dtype, batch, monkeypatch):
    fused, plain = _models(dtype, monkeypatch)
    assert _fused(fused) == ["r1", "r2"]
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 12)).astype(dtype)
    x[batch - 1, 4] = np.nan  # a NaN row: relu keeps NaN
    if batch > 1:
        x[0] = 0.0  # a row of zeros: y is the bias alone, some of it negative
    plain_out = plain(x)
    for _ in range(2):  # the first call decides the plan, the second replays it
        for got, want in zip(fused(x), plain_out):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    r2 = plain_out[0]
    assert np.isnan(r2[batch - 1]).all()
    assert batch == 1 or ((r2 == 0).any() and (r2 > 0).any())


def test_passes_with_gradients_run_the_linear_unfused(monkeypatch):
    # The flag lives on inference's copies only: the model's own linears (which training,
    # gradient passes and ONNX export use) keep computing x @ w.T + b, relu apart.
    fused, plain = _models("float64", monkeypatch)
    x = np.random.default_rng(4).standard_normal((5, 12))
    fused(x)
    ex = fused._executor
    assert not any(getattr(layer, "fused_relu", False) for layer, *_ in ex._steps)
    assert [ex._steps[k][3] for k, f in enumerate(ex._inference) if getattr(getattr(f, "__self__", None),
                                                                            "fused_relu", False)] == ["fc1", "fc2"]
    for got, want in zip(fused(x, grad=True), plain(x)):
        np.testing.assert_array_equal(got, want)


def test_the_kernels_relu_rule_on_both_routes():
    # linear_cpu.linear_forward(..., relu=True) against its own unfused output through
    # relu_cpu, in 1 to 3 chunks, each route chosen by the scratch handed in (whatever the
    # thread count): turned-around (T, K, rows) and direct (T, 0, 0). -0.0 to 0, NaN kept.
    from numbacnn.layers import linear_cpu, relu_cpu

    rng = np.random.default_rng(8)
    for N, T in ((1, 1), (6, 2), (7, 3), (200, 2)):
        x = rng.standard_normal((N, 10)).astype(np.float32)
        w = rng.standard_normal((4, 10)).astype(np.float32)
        b = np.array([-0.0, 0.0, -1.0, 2.0], np.float32)
        x[N - 1] = 0.0
        x[0, 3] = np.nan
        for scratch in (np.empty((T, 4, -(-N // T)), np.float32), np.empty((T, 0, 0), np.float32)):
            y, want = np.full((N, 4), 7.0, np.float32), np.empty((N, 4), np.float32)
            linear_cpu.linear_forward(x, w, b, want, scratch)
            relu_cpu.relu_forward(want.reshape(-1), want.reshape(-1))
            linear_cpu.linear_forward(x, w, b, y, scratch, True)
            np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32))
            assert np.isnan(y[0]).all() and not np.signbit(y[~np.isnan(y)]).any()


@pytest.mark.cuda
def test_the_cuda_twin_takes_the_relu():
    # One kernel interface: linear_cuda takes the flag too (the executor fuses on the CPU only).
    from numba import cuda

    from numbacnn.layers import linear_cpu, linear_cuda

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    x[1, 2] = np.nan
    want = np.empty((3, 5), np.float32)
    linear_cpu.linear_forward(x, w, b, want, np.empty(linear_cpu.linear_scratch(3, 5, 6)[0], np.float32), True)
    y = cuda.device_array((3, 5), np.float32)
    linear_cuda.linear_forward(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), y, (), True)
    got = y.copy_to_host()
    assert (want == 0).any() and np.isnan(want[1]).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and (got[want == 0] == 0).all()
