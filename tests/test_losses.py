import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import losses


def test_cross_entropy_worked_example():
    # row 0: softmax([0, 0]) = [0.5, 0.5], label 0 -> loss ln 2, grad [-0.5, 0.5]
    # row 1: softmax([0, ln 3]) = [0.25, 0.75], label 1 -> loss -ln 0.75, grad [0.25, -0.25]
    x = np.array([[0.0, 0.0], [0.0, math.log(3.0)]], np.float32)
    loss, gy = nc.losses.cross_entropy(x, np.array([0, 1]))
    assert loss == pytest.approx((math.log(2.0) - math.log(0.75)) / 2, rel=1e-6)
    np.testing.assert_allclose(gy, [[-0.25, 0.25], [0.125, -0.125]], rtol=1e-6)
    assert gy.dtype == np.float32 and isinstance(loss, float)


def test_cross_entropy_counted_counts_argmax_hits():
    # rows: a tie (argmax takes the first, 0), a clear 1, a clear 2 labelled 0
    x = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 3.0]], np.float32)
    y = np.array([0, 1, 0])
    loss, gy, hits = nc.losses.cross_entropy_counted(x, y)
    assert hits == 2 == int((x.argmax(1) == y).sum())
    want_loss, want_gy = nc.losses.cross_entropy(x, y)
    assert loss == want_loss
    np.testing.assert_array_equal(gy, want_gy)


def test_cross_entropy_matches_torch_and_is_stable():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 10)) * 4).astype(np.float32)
    x[0] += 1000.0  # a naive exp would overflow
    x[1, 3] = -1000.0
    y = rng.integers(0, 10, 37)
    loss, gy = nc.losses.cross_entropy(x, y)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(y))
    lt.backward()
    assert np.isfinite(loss) and np.isfinite(gy).all()
    assert loss == pytest.approx(lt.item(), rel=1e-5)
    np.testing.assert_allclose(gy, xt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_mse_worked_example_and_torch():
    # mean over all 4 elements of [1, 4, 0, 9] = 3.5; grad 2 (x - t) / 4
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    t = np.array([[0.0, 0.0], [3.0, 1.0]], np.float32)
    loss, gy = nc.losses.mse(x, t)
    assert loss == pytest.approx(3.5)
    np.testing.assert_allclose(gy, [[0.5, 1.0], [0.0, 1.5]])
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    t = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    loss, gy = nc.losses.mse(x, t)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.mse_loss(xt, torch.tensor(t))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-6)
    assert gy.shape == x.shape
    np.testing.assert_allclose(gy, xt.grad.numpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("x,y,err,match", [
    (np.zeros((2, 3), np.float32), np.array([0, 3]), ValueError, "label 3 is out of range for 3 classes"),
    (np.zeros((2, 3), np.float32), np.array([0, -1]), ValueError, "label -1 is out of range"),
    (np.zeros((2, 3), np.float32), np.array([-5, 1], np.int32), ValueError, "label -5 is out of range"),
    (np.zeros((2, 3), np.float32), np.array([1, 200], np.uint8), ValueError, "label 200 is out of range"),
    (np.zeros((2, 3), np.float32), np.array([0, -2**63]), ValueError, f"label {-2**63} is out of range"),
    (np.zeros((2, 3), np.float32), np.array([True, False]), TypeError, "labels must be integers"),
    (np.zeros((2, 3), np.float32), np.array([0]), ValueError, r"expected 2 labels"),
    (np.zeros((2, 3), np.float32), np.array([0.0, 1.0]), TypeError, "labels must be integers"),
    (np.zeros((2, 3, 1, 1), np.float32), np.array([0, 1]), ValueError, "expected logits of shape"),
    (np.zeros((2, 3), np.int32), np.array([0, 1]), TypeError, "float32 or float64"),
    ([[0.0, 1.0]], np.array([0]), TypeError, "NumPy or CUDA device array"),
])
def test_cross_entropy_refuses_bad_input(x, y, err, match):
    with pytest.raises(err, match=match):
        nc.losses.cross_entropy(x, y)


# Up to _FEW_LABELS labels are range-checked in Python, more through NumPy: both sides, each
# with good labels (the loss against NumPy) and each kind of bad one, and a non-int64 dtype.
@pytest.mark.parametrize("n", [losses._FEW_LABELS, losses._FEW_LABELS + 1])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_cross_entropy_checks_labels_on_both_sides_of_few_labels(n, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 5))
    y = rng.integers(0, 5, n).astype(dtype)
    y[-1] = 4
    loss, _ = nc.losses.cross_entropy(x, y)
    shifted = x - x.max(1, keepdims=True)
    want = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(n), y.astype(np.int64)])
    assert loss == pytest.approx(want, rel=1e-12)
    for bad in ([5, 200] if dtype == np.uint8 else [5, -1]):
        z = y.copy()
        z[-1] = bad
        with pytest.raises(ValueError, match=f"label {bad} is out of range for 5 classes"):
            nc.losses.cross_entropy(x, z)


def test_mse_refuses_a_target_of_another_float_dtype():
    # PyTorch 2.13 would promote to float64; numbacnn never mixes float32 and float64.
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"mse: the target is float64 but the prediction is float32; .*"
                                        r"target.astype\(np.float32\)"):
        nc.losses.mse(x, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="the target is float32 but the prediction is float64"):
        nc.losses.mse(x.astype(np.float64), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="expected a numeric target, found <U1"):
        nc.losses.mse(x, np.full((2, 3), "a"))


def test_mse_converts_integer_targets_as_torch_promotes_them():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 2
    t = np.array([[0, 1, 2], [1, 1, 3]])
    loss, gy = nc.losses.mse(x, t)
    want_loss, want_gy = nc.losses.mse(x, t.astype(np.float32))
    assert loss == want_loss and gy.dtype == np.float32
    np.testing.assert_array_equal(gy, want_gy)
    torch = pytest.importorskip("torch")
    assert loss == pytest.approx(torch.nn.functional.mse_loss(torch.tensor(x), torch.tensor(t)).item(), rel=1e-6)


def test_mse_shape_mismatch_and_lookup():
    with pytest.raises(ValueError, match=r"target shape \(2, 2\) differs"):
        nc.losses.mse(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32))
    assert nc.losses.get("mse") is nc.losses.mse
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        nc.losses.get("hinge")


@pytest.mark.cuda
def test_losses_cuda_match_cpu():
    from numba import cuda

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 4)) * 3).astype(np.float32)
    y = rng.integers(0, 4, 5)
    t = rng.standard_normal((5, 4)).astype(np.float32)
    assert nc.losses.cross_entropy_counted(cuda.to_device(x), y)[2] == nc.losses.cross_entropy_counted(x, y)[2]
    for fn, target in ((nc.losses.cross_entropy, y), (nc.losses.mse, t)):
        loss, gy = fn(x, target)
        dloss, dgy = fn(cuda.to_device(x), target)
        assert not isinstance(dgy, np.ndarray) and dgy.dtype == np.float32
        assert dloss == pytest.approx(loss, rel=1e-6)
        np.testing.assert_allclose(dgy.copy_to_host(), gy, rtol=1e-6, atol=1e-8)
