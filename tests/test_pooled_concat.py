"""Inference's pooled concat (numbacnn._fold.pool_pairs, PooledConcat): a channel join whose one
reader is a per-channel pool pools each input first and joins the pooled parts. Each fused model
against the same model unfused (NUMBACNN_FUSE_RELU=0) bit for bit, for every pool it takes, on
both of its routes (pooled first, and joined first below POOLED_CONCAT_MIN_BYTES), NaN and the
infinities included, over calls that replay the first one's kernel calls on new data; against
pools written here in NumPy; and what is not fused: a join read twice or returned, training and
gradient passes."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _fold

# (layer, config): every class in _fold.PER_CHANNEL_POOLS, padded and not, at strides 1 and 2.
POOLS = [
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("max_pool2d", {"kernel_size": 2}),
    ("max_pool2d", {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("avg_pool2d", {"kernel_size": 2}),
    ("global_avg_pool2d", {}),
    ("global_max_pool2d", {}),
]


def _graph(pool: str, config: dict, returned: bool = False, read_twice: bool = False) -> nc.Graph:
    # three branches of 3, 6 and 5 channels joined into 14, then the pool
    g = nc.Graph()
    x = g.input((6, 10, 9))
    a = g.conv2d(x, out_channels=3, kernel_size=1, name="a")
    b = g.relu(x, name="b")
    c = g.conv2d(x, out_channels=5, kernel_size=3, padding=1, name="c")
    j = g.concat(a, b, c, name="j")
    y = g.layer(pool, j, name="p", **config)
    outs = [y]
    if returned:
        outs.append(j)
    if read_twice:
        outs.append(g.relu(j, name="r"))
    g.output(*outs)
    return g


def _model(graph: nc.Graph, fuse: bool, monkeypatch: pytest.MonkeyPatch) -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
    model = nc.Model(graph, seed=3)
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    return model


def _pairs(model: nc.Model) -> list[tuple[str, str]]:
    """(concat, pool) node names of every pool whose concat pools at inference."""
    ex = model._executor
    names = [name for _, _, _, name in ex._steps]
    return [(names[j], names[k]) for j, k in ex._pooled
            if isinstance(ex._inference[j], _fold.PooledConcat) and ex._inference[k] is _fold.skip]


def _windows(x: np.ndarray, k: int, s: int, p: int, fill: float) -> np.ndarray:
    """Every k x k window at stride s over x padded by p with ``fill``: (N, C, P, Q, k*k)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    P, Q = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    return np.stack([xp[:, :, r:r + s * P:s, t:t + s * Q:s] for r in range(k) for t in range(k)], axis=-1)


def _reference(pool: str, config: dict, joined: np.ndarray) -> np.ndarray:
    """The pool of the joined channels in float64, written here (PyTorch's rules: NaN wins a max,
    an average's padding counts in its divisor)."""
    x = joined.astype(np.float64)
    if pool.startswith("global"):
        windows = x.reshape(*x.shape[:2], 1, 1, -1)
    else:
        k, p = config["kernel_size"], config.get("padding", 0)
        windows = _windows(x, k, config.get("stride", k), p, -np.inf if "max" in pool else 0.0)
    with np.errstate(invalid="ignore"):  # inf - inf in a mean: NaN, as the pool's
        y = windows.max(axis=-1) if "max" in pool else windows.mean(axis=-1)
    return y.reshape(y.shape[:2]) if pool.startswith("global") else y


def _data(seed: int, special: bool) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(4, 6, 10, 9)).astype(np.float32)
    if special:  # NaN and the infinities reach every branch (relu keeps NaN, a conv spreads it)
        x[0, 1, 2, 3], x[0, 4, 7, 1], x[1, 2, 5, 5], x[2, 0, 0, 0] = np.nan, np.inf, -np.inf, np.nan
    return x


@pytest.mark.parametrize("first", ["pooled", "joined"])
@pytest.mark.parametrize("pool,config", POOLS)
def test_pooled_concat_is_the_pool_of_the_join_bit_for_bit(pool, config, first, monkeypatch):
    monkeypatch.setattr(_fold, "POOLED_CONCAT_MIN_BYTES", 0 if first == "pooled" else 1 << 40)
    graph = _graph(pool, config)
    fused, plain = _model(graph, True, monkeypatch), _model(graph, False, monkeypatch)  # one seed: one weights
    assert _pairs(fused) == [("j", "p")] and _pairs(plain) == []
    join = _graph(pool, config, returned=True)  # the join returned: unfused, its values to pool here
    seen = nc.Model(join, seed=3)
    # New values in the same arrays on every call after the first: the replay's kernel calls
    # (ctx._call) must read them, not the first call's.
    for seed, special in [(0, False), (1, True), (2, False), (1, True)]:
        x = _data(seed, special)
        y, want = fused.forward(x), plain.forward(x)
        np.testing.assert_array_equal(y, want)  # NaN where NaN, bit for bit elsewhere
        ref = _reference(pool, config, seen.forward(x)[1])
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_googlenet_mini_pools_its_joins(monkeypatch):
    model = nc.zoo.googlenet_mini()
    assert _pairs(model) == [("inc3b.concat", "pool3"), ("inc4b.concat", "pool4"), ("inc5a.concat", "gap")]
    assert _pairs(_model(model.graph, False, monkeypatch)) == []


@pytest.mark.parametrize("returned,read_twice", [(True, False), (False, True)])
def test_a_join_read_elsewhere_is_not_pooled(returned, read_twice, monkeypatch):
    monkeypatch.setattr(_fold, "POOLED_CONCAT_MIN_BYTES", 0)
    config = {"kernel_size": 2}
    model = _model(_graph("max_pool2d", config, returned, read_twice), True, monkeypatch)
    assert _pairs(model) == [] and model._executor._pooled == []
    x = _data(1, True)
    joined = nc.Model(_graph("max_pool2d", config, returned=True), seed=3).forward(x)[1]
    np.testing.assert_array_equal(model.forward(x)[0], _reference("max_pool2d", config, joined).astype(np.float32))


def test_training_and_gradient_passes_run_unfused(monkeypatch):
    monkeypatch.setattr(_fold, "POOLED_CONCAT_MIN_BYTES", 0)
    config = {"kernel_size": 3, "stride": 2, "padding": 1}
    graph = _graph("max_pool2d", config)
    fused, plain = _model(graph, True, monkeypatch), _model(graph, False, monkeypatch)
    x = _data(3, False)
    for kw in ({"training": True}, {"grad": True}, {}):
        np.testing.assert_array_equal(fused.forward(x, **kw), plain.forward(x, **kw))
    # a training step's gradients after an inference that pooled first: the same as unfused
    fused.forward(x)
    for m in (fused, plain):
        m.zero_grad()
        m.forward(x, training=True)
        m.backward(np.ones((4, 14, 5, 5), np.float32))
    for key, g in fused.grads.items():
        np.testing.assert_array_equal(g, plain.grads[key])
