import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer


def dropout_model(p, shape, dtype="float32", seed=0):
    g = nc.Graph()
    g.output(g.dropout(g.input(shape), p=p))
    return nc.Model(g, dtype=dtype, seed=seed)


@pytest.mark.parametrize("p, shape", [(0.5, (1, 1, 1, 1)), (0.3, (2, 3, 5, 7)), (0.9, (3, 11))])
def test_dropout_is_the_identity_in_evaluation(p, shape):
    check_layer(nc.get_layer("dropout")(p=p), [shape], lambda x: x.copy())


@pytest.mark.parametrize("p, shape", [(0.5, (1, 1, 1, 1)), (0.3, (2, 3, 5, 7)), (0.0, (3, 11)), (0.8, (4, 50))])
def test_dropout_training_gradients(p, shape):
    # check_layer gives every forward the same RNG state, so the mask repeats between calls.
    check_layer(nc.get_layer("dropout")(p=p), [shape], training=True)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9])
def test_dropout_keeps_about_1_minus_p_and_scales_the_survivors(p):
    model = dropout_model(p, (10, 100, 100))
    x = np.random.default_rng(0).uniform(1, 2, (10, 10, 100, 100)).astype(np.float32)
    y = model.forward(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(1 - p), rtol=1e-6)
    # 1e6 draws: the kept fraction's standard deviation is at most 5e-4.
    assert abs(kept.mean() - (1 - p)) < 3e-3
    if p > 0:
        # Neighbouring elements and consecutive forwards draw independent masks.
        assert abs(np.corrcoef(kept.reshape(-1)[:-1], kept.reshape(-1)[1:])[0, 1]) < 0.01
        again = model.forward(x, training=True) != 0
        assert (again != kept).any() and abs(np.corrcoef(kept.ravel(), again.ravel())[0, 1]) < 0.01


def test_dropout_backward_uses_the_forward_mask():
    model = dropout_model(0.4, (64,), dtype="float64")
    x = np.random.default_rng(0).standard_normal((8, 64))
    gy = np.random.default_rng(1).standard_normal((8, 64))
    y = model.forward(x, training=True)
    gx = model.backward(gy)
    np.testing.assert_allclose(gx, np.where(y != 0, gy / 0.6, 0.0), rtol=1e-15)
    model.forward(x, training=False, grad=True)  # evaluation: the identity both ways
    np.testing.assert_array_equal(model.backward(gy), gy)


def test_dropout_masks_repeat_for_a_seed():
    x = np.ones((4, 3, 5, 5), np.float32)
    a = dropout_model(0.5, (3, 5, 5), seed=7).forward(x, training=True)
    b = dropout_model(0.5, (3, 5, 5), seed=7).forward(x, training=True)
    c = dropout_model(0.5, (3, 5, 5), seed=8).forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


@pytest.mark.parametrize("bad, error", [(1.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
                                        ("0.5", TypeError), (None, TypeError), (True, TypeError)])
def test_dropout_rejects_bad_p(bad, error):
    with pytest.raises(error, match="p "):
        nc.get_layer("dropout")(p=bad)


def test_dropout_evaluation_matches_torch_and_training_its_statistics():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(1, 2, (4, 8, 16, 16)).astype(np.float32)
    drop = torch.nn.Dropout(p=0.3)
    drop.eval()
    np.testing.assert_array_equal(dropout_model(0.3, (8, 16, 16)).forward(x), drop(torch.from_numpy(x)).numpy())
    drop.train()
    ours, theirs = dropout_model(0.3, (8, 16, 16)).forward(x, training=True), drop(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.unique(ours[ours != 0] / x[ours != 0]), np.unique(theirs[theirs != 0] / x[theirs != 0]),
                               rtol=1e-6)



def test_dropout_in_inference_passes_its_input_buffer_on():
    g = nc.Graph()
    h = g.dropout(g.relu(g.linear(g.input((6,)), out_features=5)), p=0.5)
    g.output(g.linear(h, out_features=4))
    model = nc.Model(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False, grad=True))

@pytest.mark.cuda
@pytest.mark.parametrize("training", [True, False])
def test_dropout_cuda(training):
    # In training, CPU/CUDA parity means the two kernels draw the same mask from one seed.
    check_layer(nc.get_layer("dropout")(p=0.4), [(2, 3, 4, 4)], None if training else (lambda x: x.copy()),
                training=training, cuda=True, threads=False)


def _mix32_ref(h):
    # Wellons' lowbias32 on uint64 words with the top half cleared, as the kernels draw it.
    m = np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x7FEB352D)) & m
    h = h ^ (h >> np.uint64(15))
    h = (h * np.uint64(0x846CA68B)) & m
    return h ^ (h >> np.uint64(16))


@pytest.mark.parametrize("size", [1, 1000, "min-1", "min", "min+7"])
def test_dropout_kernel_both_sides_of_parallel_min(size):
    # Serial below PARALLEL_MIN elements, parallel from there: the same mask either way (a
    # NumPy draw of the same hash), and a dropped NaN stays NaN (x * 0).
    from numbacnn._threads import PARALLEL_MIN
    from numbacnn.layers import dropout_cpu

    n = size if isinstance(size, int) else PARALLEL_MIN + int(size[3:] or 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    x[n // 2] = np.nan
    s0, s1, threshold, scale = np.uint64(12345), np.uint64(678), np.uint64(2**31), np.float32(2)
    h = _mix32_ref(_mix32_ref((np.arange(n, dtype=np.uint64) + s0) & np.uint64(0xFFFFFFFF)) ^ s1)
    want = x * np.where(h < threshold, scale, np.float32(0))
    y = np.full(n, 7.0, np.float32)
    dropout_cpu.dropout_forward(x, s0, s1, threshold, scale, y)
    np.testing.assert_array_equal(y, want)
    assert np.isnan(y[n // 2])
    if n > 100:
        assert 0.4 < (y == 0).mean() < 0.6
