import importlib.util
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import zoo

BENCH = Path(__file__).resolve().parents[1] / "bench" / "accuracy_mnist.py"


@pytest.fixture
def slow(request):
    """Slow tests run only when asked for: ``python -m pytest -m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow: run with -m slow")


def bench_module():
    spec = importlib.util.spec_from_file_location("accuracy_mnist", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Parameter counts worked out from the architectures: conv K*C*R*S + K, linear out*in + out.
@pytest.mark.parametrize("build,params", [
    (lambda: zoo.lenet5(), 156 + 2416 + (400 * 120 + 120) + (120 * 84 + 84) + 850),
    (lambda: zoo.lenet5(input_shape=(1, 8, 8)), 156 + 2416 + (64 * 120 + 120) + (120 * 84 + 84) + 850),
    (lambda: zoo.network3("fc"), 784 * 100 + 100 + 1010),
    (lambda: zoo.network3("conv1"), 520 + 2880 * 100 + 100 + 1010),
    (lambda: zoo.network3("conv2"), 520 + 20040 + 64100 + 1010),
    (lambda: zoo.network3("conv2_relu"), 520 + 20040 + 64100 + 1010),
    (lambda: zoo.network3("conv2_relu_dropout"), 520 + 20040 + 641000 + 1001000 + 10010),
    (lambda: zoo.vgg_small(), 896 + 9248 + 18496 + 36928 + 73856 + 147584 + 2048 * 256 + 256 + 2570),
    (lambda: zoo.vgg_small(width=8, batch_norm=True),
     (216 + 576 + 1152 + 2304 + 4608 + 9216) + 2 * (8 + 8 + 16 + 16 + 32 + 32) + 512 * 256 + 256 + 2570),
])
def test_structure_and_parameter_counts(build, params):
    model = build()
    assert model.param_count() == params
    assert model.output_shape == (10,)
    table = model.summary()
    assert f"{params:,}" in table.splitlines()[-1]


def test_every_model_takes_a_training_step():
    for model in (zoo.lenet5(input_shape=(1, 8, 8)), zoo.network3("conv2_relu_dropout"),
                  zoo.vgg_small(width=4, batch_norm=True)):
        x = np.random.default_rng(0).random((2, *model.input_shapes[0]), dtype=np.float32)
        t = nc.Trainer(model, nc.optim.SGD(model, lr=0.01))
        loss, _ = t.train_step(x, np.array([1, 2]))
        assert np.isfinite(loss)


def test_seed_decides_the_weights():
    a, b, c = zoo.network3(seed=1), zoo.network3(seed=1), zoo.network3(seed=2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["conv1.weight"], c.params["conv1.weight"])


def test_network3_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = zoo.network3("conv2_relu", seed=3)
    net = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(20, 40, 5), nn.MaxPool2d(2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10))
    names = {0: "conv1", 3: "conv2", 7: "fc1", 9: "fc2"}
    with torch.no_grad():
        for i, name in names.items():
            net[i].weight.copy_(torch.tensor(model.params[f"{name}.weight"]))
            net[i].bias.copy_(torch.tensor(model.params[f"{name}.bias"]))
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn,match", [
    (lambda: zoo.network3("conv3"), "unknown variant 'conv3'"),
    (lambda: zoo.lenet5(input_shape=(28, 28)), r"input_shape must be three positive sizes"),
    (lambda: zoo.lenet5(num_classes=1), "num_classes must be an int >= 2"),
    (lambda: zoo.vgg_small(input_shape=(1, 4, 4)), "at least 8x8"),
    (lambda: zoo.build("resnet9000"), "unknown model 'resnet9000'"),
])
def test_bad_arguments(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_mnist_accuracy_smoke(mnist_dir):
    """CI's version of bench/accuracy_mnist.py: one epoch on 2,000 images learns something."""
    r = bench_module().run(mnist_dir, seed=0, epochs=1, n_train=2000)
    assert r["accuracy"] > 0.5 and r["loss"] < 2.0


@pytest.mark.slow
def test_mnist_accuracy_full_recipe(mnist_dir, slow):
    r = bench_module().run(mnist_dir, seed=0)
    assert r["accuracy"] >= 0.985, r
