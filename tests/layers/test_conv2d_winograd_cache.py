"""conv2d's Winograd path keeps its transformed weights between inference calls, never stale.

Without a backward to come, the CPU's Winograd forward transforms the weights once and keeps
them (with a copy of the weight) in its plan; any change to the weight, in place, by a training
step or by ``load_state``, must show on the next call. PyTorch is the oracle; the layers have
16 channels and 16x17 outputs, so in float32 the default thresholds choose Winograd on their
own; float64 (the oracle's precision) takes im2col unless forced, so every test here forces it.
"""


import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layers import conv2d_winograd_cpu

torch = pytest.importorskip("torch")

SHAPE = (16, 16, 17)  # 272 output pixels: enough for the 5x5 kernel's Winograd path too


def _model(dtype="float64"):
    g = nc.Graph()
    x = g.input(SHAPE)
    h = g.conv2d(x, name="c1", out_channels=16, kernel_size=3, padding=1)
    g.conv2d(h, name="c2", out_channels=16, kernel_size=5, padding=2)
    return nc.Model(g, seed=0, dtype=dtype)


def _torch(m, x):
    p = {k: torch.tensor(v) for k, v in m.params.items()}
    h = torch.nn.functional.conv2d(torch.tensor(x), p["c1.weight"], p["c1.bias"], padding=1)
    return torch.nn.functional.conv2d(h, p["c2.weight"], p["c2.bias"], padding=2).numpy()


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *SHAPE))


@pytest.fixture(autouse=True)
def _winograd(monkeypatch):
    monkeypatch.setenv("NUMBACNN_CONV2D_PATH", "winograd")


@pytest.fixture
def transforms(monkeypatch):
    # Counts the weight transforms that run (the Winograd path is taken: see the assert below);
    # _weights runs either transform (winograd_weights, or winograd_weights5 for 5x5).
    calls = []
    original = conv2d_winograd_cpu._weights

    def counting(w, U):
        calls.append(w.shape)
        return original(w, U)

    monkeypatch.setattr(conv2d_winograd_cpu, "_weights", counting)
    return calls


def test_inference_transforms_the_weights_once(transforms):
    m, x = _model(), _x(2)
    for _ in range(3):
        np.testing.assert_allclose(m.forward(x), _torch(m, x), rtol=1e-10, atol=1e-10)
    assert transforms == [(16, 16, 3, 3), (16, 16, 5, 5)]  # the first call's, then none


def test_a_weight_edited_in_place_shows_on_the_next_call(transforms):
    m, x = _model(), _x(3)
    m.forward(x)
    m.params["c2.weight"][3, 2, 4, 1] += 0.5
    m.params["c1.weight"][:] *= -1
    np.testing.assert_allclose(m.forward(x), _torch(m, x), rtol=1e-10, atol=1e-10)
    assert len(transforms) == 4
    m.params["c1.weight"][0, 0, 0, 0] = np.nextafter(m.params["c1.weight"][0, 0, 0, 0], 9.0)  # one ulp
    np.testing.assert_allclose(m.forward(x), _torch(m, x), rtol=1e-10, atol=1e-10)
    assert len(transforms) == 5


def test_a_training_step_and_load_state_show_on_the_next_inference():
    m, x = _model("float32"), _x(2).astype(np.float32)
    before = m.forward(x)
    state = m.state()
    opt = nc.optim.SGD(m, lr=0.1)
    opt.zero_grad()
    m.forward(x, training=True)
    m.backward(np.ones((2, 16, *SHAPE[1:]), np.float32))
    opt.step()
    after = m.forward(x)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, _torch(m, x), rtol=1e-4, atol=1e-4)
    m.load_state(state)
    np.testing.assert_array_equal(m.forward(x), before)


def test_inf_put_into_a_cached_weight_falls_back_to_im2col():
    # The transforms turn one Inf tap into Inf - Inf = NaN over whole tiles, where PyTorch has
    # +-Inf or NaN by the signs of x under the tap: the forward must see it and recompute.
    m, x = _model(), _x(1)
    m.forward(x)
    m.params["c2.weight"][2, 5, 1, 1] = np.inf
    y, want = m.forward(x), _torch(m, x)
    assert np.isinf(want).any() and np.isfinite(want).any()
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)


def test_threads_each_keep_their_own_transform_and_see_edits(gather):
    m = _model()
    xs = [_x(b, b) for b in (1, 2, 3)]
    for step in range(2):
        want = [_torch(m, x) for x in xs]

        def calls(i):
            return [(k, m.forward(xs[k])) for k in np.random.default_rng(i).integers(0, len(xs), 6)]

        for outcome in gather(4, calls):
            for k, y in outcome:
                np.testing.assert_allclose(y, want[k], rtol=1e-10, atol=1e-10)
        m.params["c2.weight"][:] = np.flip(m.params["c2.weight"], axis=0)


def test_the_cache_compares_every_bit():
    cache = conv2d_winograd_cpu.WeightCache()
    w = np.random.default_rng(0).standard_normal((3, 2, 3, 3)).astype(np.float32)
    U = cache.transformed(w).copy()
    assert cache.transformed(w) is cache.U and np.array_equal(cache.U, U)
    for i in (0, w.size - 1):  # the first word, the last one (past the compare's whole blocks)
        w2 = w.copy()
        w2.reshape(-1)[i] = -w2.reshape(-1)[i]
        assert not np.array_equal(cache.transformed(w2), U)
        assert np.array_equal(cache.transformed(w), U)
    big = np.zeros((64, 64, 3, 3), np.float32)  # several whole blocks; a change in the middle
    cache.transformed(big)
    big[40, 3, 1, 1] = -0.0  # a sign bit alone
    assert cache.source[40, 3, 1, 1].tobytes() != big[40, 3, 1, 1].tobytes()
    cache.transformed(big)
    assert cache.source[40, 3, 1, 1].tobytes() == big[40, 3, 1, 1].tobytes()
