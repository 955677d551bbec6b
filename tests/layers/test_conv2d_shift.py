"""conv2d's shifted-taps path (conv2d_shift_cpu): where the default takes it, and its outputs
against PyTorch and a float64 reference, NaN and Inf included. Its bounds and every padding
and dilation are swept in test_conv2d_bounds (forced), its fused relu and residual in
test_fuse_inference."""

import numpy as np
import pytest

import numbacnn as nc
from _conv_cases import cpu_path, naive

Conv2d = nc.get_layer("conv2d")


def test_conv2d_cpu_batch_one_inference_takes_shifted_taps_at_few_output_channels():
    # Batch-1 inference at stride 1 with up to 8 output channels (lenet5's conv1, 1 -> 6 5x5
    # at 28x28, in the model's one-thread replay: 14.6 -> 9.4 us); from 12 channels the BLAS
    # paths won; larger batches stay with them (conv2d_plan.SHIFT_MAX_OUT_CHANNELS).
    lenet = Conv2d(out_channels=6, kernel_size=5, padding=2)
    assert cpu_path(lenet, (1, 1, 28, 28), backward=False) == "shift"
    assert cpu_path(lenet, (2, 1, 28, 28), backward=False) != "shift"
    assert cpu_path(Conv2d(out_channels=8, kernel_size=5, padding=2), (1, 4, 16, 16), backward=False) == "shift"
    assert cpu_path(Conv2d(out_channels=9, kernel_size=5, padding=2), (1, 4, 16, 16), backward=False) != "shift"
    assert cpu_path(lenet, (1, 1, 28, 28)) == "im2col"  # a training step keeps im2col's forward and backward
    assert cpu_path(lenet, (1, 1, 28, 28), "float64", backward=False) == "im2col"
    assert cpu_path(Conv2d(out_channels=6, kernel_size=5, stride=2), (1, 1, 28, 28), backward=False) != "shift"
    assert cpu_path(Conv2d(out_channels=6, kernel_size=1), (1, 3, 8, 8), backward=False) != "shift"  # 1x1
    assert cpu_path(Conv2d(out_channels=6, kernel_size=(1, 5)), (1, 3, 1, 28), backward=False) != "shift"  # conv1d
    assert cpu_path(Conv2d(out_channels=6, kernel_size=3, groups=2), (1, 4, 8, 8), backward=False) != "shift"
    # a sample with 1 M multiply-adds or more: the BLAS paths split it over the threads, shift would not
    assert cpu_path(Conv2d(out_channels=3, kernel_size=3, padding=1), (1, 256, 64, 64), backward=False) != "shift"


def test_conv2d_forced_shift_refuses_what_it_cannot_run():
    from numbacnn.layers.conv2d_cpu import force_path

    g = nc.Graph()
    g.conv2d(g.input((4, 8, 8)), out_channels=4, kernel_size=3, stride=2, name="conv_s")
    with force_path("shift"), pytest.raises(ValueError, match=r"node 'conv_s': conv2d path 'shift' was forced .*"
                                                              r"groups 1 and stride 1; found groups 1, stride 2x2"):
        nc.Model(g, seed=0).forward(np.zeros((1, 4, 8, 8), np.float32))


def _model(C, K, kernel, pad, shape, relu):
    g = nc.Graph()
    h = g.conv2d(g.input((C, *shape)), out_channels=K, kernel_size=kernel, padding=pad, name="c")
    g.output(g.relu(h) if relu else h)
    return nc.Model(g, seed=3)


@pytest.mark.parametrize("C,K,kernel,pad,shape", [(1, 6, 5, 2, (28, 28)), (4, 8, 5, 2, (16, 16)), (3, 8, 3, 1, (9, 7)),
                                                  (2, 5, (2, 4), 0, (5, 11)), (1, 1, 5, 2, (1, 1))])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_shift_against_a_float64_reference(C, K, kernel, pad, shape, batch):
    # The default's pick in inference at batch 1 (rows of 5 taps in one pass, other kernels
    # one tap at a time), run in the caller; forced at batch 3, which cuts the batch over the
    # threads unevenly.
    from numbacnn.layers.conv2d_cpu import force_path

    m = _model(C, K, kernel, pad, shape, relu=False)
    x = np.random.default_rng(C * K).standard_normal((batch, C, *shape)).astype(np.float32)
    with force_path("auto" if batch == 1 else "shift"):
        y = m.forward(x)
    plans = [p for ctx in m._executor.thread_pass().folds.ctxs for p in ctx._plans.values()]
    assert [p.path for p in plans if hasattr(p, "path")] == ["shift"]
    w, b = m.params["c.weight"].astype(np.float64), m.params["c.bias"].astype(np.float64)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if kh == kw:
        want = naive(x.astype(np.float64), w, b, None, pad)[0]
        np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y, m.forward(x, grad=True), rtol=2e-5, atol=2e-5)  # the training forward: im2col


def test_conv2d_shift_like_torch_with_nan_and_inf():
    torch = pytest.importorskip("torch")
    from numbacnn.layers.conv2d_cpu import force_path

    m = _model(1, 6, 5, 2, (28, 28), relu=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    x[0, 0, 3, 4], x[0, 0, 20, 0], x[1, 0, 27, 27], x[1, 0, 10, 10] = np.nan, np.inf, -np.inf, 1e30
    with force_path("shift"):
        y = m.forward(x)
    want = torch.relu(torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(m.params["c.weight"]),
                                                 torch.tensor(m.params["c.bias"]), padding=2)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    fine = np.isfinite(want)
    np.testing.assert_allclose(y[fine], want[fine], rtol=1e-5, atol=1e-5 * np.abs(want[fine]).max())
    assert np.isnan(y).any() and np.isinf(y).any() and (y == 0).any()
