"""Device-resident training on CUDA (the simulator in CI, a GPU when there is one)."""

import numpy as np
import pytest

import numbacnn as nc

pytestmark = pytest.mark.cuda


def tiny_network3(seed=0):
    """network3's two-conv ReLU net, shrunk so the simulator runs it in seconds."""
    g = nc.Graph()
    x = g.input((1, 12, 12))
    h = g.max_pool2d(g.relu(g.conv2d(x, out_channels=4, kernel_size=5, name="conv1")), kernel_size=2)
    h = g.max_pool2d(g.relu(g.conv2d(h, out_channels=8, kernel_size=3, name="conv2")), kernel_size=2)
    h = g.relu(g.linear(g.flatten(h), out_features=16, name="fc1"))
    g.output(g.linear(h, out_features=10, name="fc2"))
    return nc.Model(g, seed=seed)


def batch(n=3):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, n)


def train_step(model, opt, x, y):
    opt.zero_grad()
    logits = model.forward(x, training=True, host=False)
    loss, gy = nc.losses.cross_entropy(logits, y)
    model.backward(gy, input_grad=False)
    opt.step()
    return loss


def host_params(model):
    backend = model._executor.backend
    return {k: backend.to_host(v) for k, v in model.params.items()}


def test_training_step_matches_cpu():
    x, y = batch()
    cpu = tiny_network3()
    gpu = tiny_network3().to("cuda")
    assert gpu.device == "cuda"
    losses = []
    for model in (cpu, gpu):
        opt = nc.optim.SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-4)
        losses.append([train_step(model, opt, x, y) for _ in range(2)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    p_cpu, p_gpu = host_params(cpu), host_params(gpu)
    for k in p_cpu:
        np.testing.assert_allclose(p_gpu[k], p_cpu[k], rtol=1e-5, atol=1e-6, err_msg=k)
    back = gpu.to("cpu")
    assert isinstance(back.params["conv1.weight"], np.ndarray)
    np.testing.assert_allclose(back.forward(x), cpu.forward(x), rtol=1e-5, atol=1e-6)


def test_no_activation_crosses_to_the_host_during_a_step(monkeypatch):
    from numba import cuda

    x, y = batch()
    model = tiny_network3().to("cuda")
    opt = nc.optim.SGD(model, lr=0.1, momentum=0.9)
    probe = cuda.device_array(1, np.float32)
    to_host, to_device = [], []
    real_copy, real_to_device = type(probe).copy_to_host, cuda.to_device
    real_copy_in = type(probe).copy_to_device
    inside = []  # a real GPU's cuda.to_device copies through copy_to_device: one transfer, counted once

    def copy_to_host(self, *args, **kwargs):
        to_host.append(tuple(self.shape))
        return real_copy(self, *args, **kwargs)

    def copy_to_device(self, src, *args, **kwargs):  # into a kept buffer (a loss's labels)
        if isinstance(src, np.ndarray) and not inside:
            to_device.append(tuple(src.shape))
        return real_copy_in(self, src, *args, **kwargs)

    def counting_to_device(obj, *args, **kwargs):
        to_device.append(tuple(np.shape(obj)))
        inside.append(True)
        try:
            return real_to_device(obj, *args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(type(probe), "copy_to_host", copy_to_host)
    monkeypatch.setattr(type(probe), "copy_to_device", copy_to_device)
    monkeypatch.setattr(cuda, "to_device", counting_to_device)
    train_step(model, opt, x, y)
    # In: the input batch and its labels. Out: one loss per sample, nothing else.
    assert sorted(to_device) == sorted([x.shape, y.shape]), to_device
    assert to_host == [(x.shape[0],)], to_host


def test_placing_a_layer_without_cuda_kernels_fails_naming_it():
    class CpuOnly(nc.Layer):
        name = "cpu_only_for_test"

        def output_shape(self, x_shape):
            return x_shape

        def forward_cpu(self, ctx, x):
            return x

        def backward_cpu(self, ctx, gy):
            return gy

    nc.register_layer(CpuOnly)
    try:
        g = nc.Graph()
        g.output(g.cpu_only_for_test(g.input((2, 3, 3)), name="mine"))
        model = nc.Model(g)
        with pytest.raises(nc.DeviceError, match=r"cpu_only_for_test node 'mine'.*__main__.*no cuda kernels"):
            model.to("cuda")
        assert model.device == "cpu"
    finally:
        from numbacnn.registry import unregister_layer

        unregister_layer("cpu_only_for_test")


def test_fan_out_gradients_sum_on_the_device():
    """One value read by three nodes: the executor's device-side sum matches the CPU's."""
    g = nc.Graph()
    t = g.relu(g.input((2, 3, 3)), name="t")
    s = g.add(g.sigmoid(t), t, g.tanh(t), name="sum")
    g.output(g.flatten(g.concat(s, t, name="cat")))
    x = np.random.default_rng(2).standard_normal((2, 2, 3, 3)).astype(np.float32)
    gy = np.random.default_rng(3).standard_normal((2, 36)).astype(np.float32)
    grads = []
    for device in ("cpu", "cuda"):
        model = nc.Model(g, seed=0).to(device)
        model.forward(x, training=True)
        grads.append(model.backward(gy))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)
