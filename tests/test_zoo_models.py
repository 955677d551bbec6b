"""The second phase's zoo models: alexnet_small, text_cnn, c3d_small, encoder_decoder."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import zoo
from numbacnn.cli import main


def needs(*layers):
    missing = [name for name in layers if name not in nc.layer_names()]
    return pytest.mark.skipif(bool(missing), reason=f"layer(s) {', '.join(missing)} not on this branch yet")


CONVT = needs("conv_transpose2d")

# Parameter counts worked out from the architectures: conv K*C*R*S (+ K with bias), linear
# out*in + out, batch norm 2C.
ALEXNET = (16 * 25 + 16) + (32 * 16 * 25 + 32) + (48 * 32 * 9 + 48) + (48 * 48 * 9 + 48) + (32 * 48 * 9 + 32) \
    + (32 * 3 * 3 * 256 + 256) + (256 * 256 + 256) + 2570
TEXT = sum(32 * 28 * r + 32 for r in (3, 4, 5)) + 96 * 10 + 10
C3D = 8 * 27 + 16 + 16 * 8 * 27 + 32 + 32 * 16 * 27 + 64 + 32 * 2 * 2 * 2 * 10 + 10
ENCDEC = (16 * 9 + 16) + (32 * 16 * 9 + 32) + (32 * 16 * 9 + 16) + (16 * 9 + 1)

CASES = {  # builder, parameters, output shape, the dataset the CLI trains it on
    "alexnet_small": (lambda **kw: zoo.alexnet_small(**kw), ALEXNET, (10,), "mnist32-t10k", ()),
    "text_cnn": (lambda **kw: zoo.text_cnn(**kw), TEXT, (10,), "mnist-rows-t10k", ("conv1d",)),
    "c3d_small": (lambda **kw: zoo.c3d_small(**kw), C3D, (10,), "mnist-video-t10k", ("conv3d",)),
    "encoder_decoder/resize": (lambda **kw: zoo.encoder_decoder("resize", **kw), ENCDEC, (1, 28, 28),
                               "mnist-denoise-t10k", ()),
    "encoder_decoder/transposed": (lambda **kw: zoo.encoder_decoder("transposed", **kw), ENCDEC, (1, 28, 28),
                                   "mnist-denoise-t10k", ("conv_transpose2d",)),
}


def case(name):
    build, params, out, dataset, layers = CASES[name]
    return pytest.param(build, params, out, dataset, id=name, marks=needs(*layers))


ALL = [case(name) for name in CASES]


@pytest.mark.parametrize("build,params,out,dataset", ALL)
def test_structure_parameters_and_output_shape(build, params, out, dataset):
    model = build(seed=0)
    assert model.param_count() == params
    assert model.output_shape == out
    assert tuple(model.input_shapes[0]) == nc.data.DATASET_SHAPES[dataset]
    assert f"{params:,}" in model.summary().splitlines()[-1]


@pytest.mark.parametrize("build,params,out,dataset", ALL)
def test_training_steps_lower_the_loss(build, params, out, dataset):
    """A few Adam steps on one fixed batch of the model's dataset shape lower its loss."""
    model = build(seed=1)
    rng = np.random.default_rng(0)
    x = rng.random((8, *model.input_shapes[0]), dtype=np.float32)
    classify = out == (10,)
    y = rng.integers(0, 10, 8) if classify else np.ascontiguousarray(x[:, :1] * np.float32(0.5))
    t = nc.Trainer(model, nc.optim.Adam(model, 1e-3), loss="cross_entropy" if classify else "mse")
    losses = [t.train_step(x, y)[0] for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.95 * losses[0], losses


@CONVT
def test_encoder_decoder_variants_have_equal_parameter_counts():
    kw = {"input_shape": (3, 32, 16), "width": 5}
    counts = {zoo.encoder_decoder(variant, **kw).param_count() for variant in zoo.ENCODER_DECODER_VARIANTS}
    assert counts == {3 * 5 * 9 + 5 + 5 * 10 * 9 + 10 + 10 * 5 * 9 + 5 + 5 * 3 * 9 + 3}


@needs("conv1d")
def test_text_cnn_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = zoo.text_cnn(input_shape=(6, 11), filters=4, widths=(2, 5), seed=2)
    convs = [nn.Conv1d(6, 4, r) for r in (2, 5)]
    fc = nn.Linear(8, 10)
    with torch.no_grad():
        for conv, r in zip(convs, (2, 5)):
            conv.weight.copy_(torch.tensor(model.params[f"conv{r}.weight"]))
            conv.bias.copy_(torch.tensor(model.params[f"conv{r}.bias"]))
        fc.weight.copy_(torch.tensor(model.params["fc.weight"]))
        fc.bias.copy_(torch.tensor(model.params["fc.bias"]))
    x = np.random.default_rng(0).standard_normal((3, 6, 11)).astype(np.float32)
    xt = torch.tensor(x)
    want = fc(torch.cat([torch.relu(conv(xt)).amax(dim=2) for conv in convs], dim=1))
    np.testing.assert_allclose(model.forward(x), want.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", [pytest.param("transposed", marks=CONVT), "resize"])
def test_encoder_decoder_matches_torch(variant):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = zoo.encoder_decoder(variant, input_shape=(2, 12, 8), width=3, seed=4)
    enc = [nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Conv2d(3, 6, 3, stride=2, padding=1)]
    if variant == "transposed":
        dec = [nn.ConvTranspose2d(6, 3, 3, stride=2, padding=1, output_padding=1),
               nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)]
        up = nn.Identity()
    else:
        dec = [nn.Conv2d(6, 3, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)]
        up = nn.Upsample(scale_factor=2, mode="nearest")
    with torch.no_grad():
        for m, name in zip(enc + dec, ("enc1", "enc2", "dec1", "dec2")):
            m.weight.copy_(torch.tensor(model.params[f"{name}.weight"]))
            m.bias.copy_(torch.tensor(model.params[f"{name}.bias"]))
    x = np.random.default_rng(0).random((2, 2, 12, 8), dtype=np.float32)
    h = torch.relu(enc[1](torch.relu(enc[0](torch.tensor(x)))))
    want = dec[1](up(torch.relu(dec[0](up(h)))))
    np.testing.assert_allclose(model.forward(x), want.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn,match", [
    (lambda: zoo.alexnet_small(input_shape=(3, 14, 32)), "at least 15x15"),
    (lambda: zoo.alexnet_small(width=0), "width must be a positive int"),
    (lambda: zoo.text_cnn(input_shape=(1, 28, 28)), r"two positive sizes \(C, L\)"),
    (lambda: zoo.text_cnn(input_shape=(8, 4), widths=(3, 5)), "kernel widths from 1 to the length 4"),
    (lambda: zoo.c3d_small(input_shape=(1, 28, 28)), r"four positive sizes \(C, D, H, W\)"),
    (lambda: zoo.c3d_small(input_shape=(1, 2, 16, 16)), "at least 4 frames of 8x8"),
    (lambda: zoo.encoder_decoder("deconv"), "unknown variant 'deconv'; expected one of transposed, resize"),
    (lambda: zoo.encoder_decoder(input_shape=(1, 30, 28)), "multiples of 4"),
])
def test_bad_arguments(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.parametrize("name", [pytest.param(name, marks=needs(*CASES[name][4])) for name in CASES])
def test_listed_by_numbacnn_summary(name, capsys):
    _, params, out, dataset, _ = CASES[name]
    model, _, variant = name.partition("/")
    assert model in zoo.MODELS
    assert main(["summary", "--model", model, "--data", dataset] + (["--variant", variant] if variant else [])) == 0
    text = capsys.readouterr().out
    shape = "x".join(map(str, nc.data.DATASET_SHAPES[dataset]))
    head = f"{model}: input {shape} ({dataset} images, as 'numbacnn train --data {dataset}'), "
    assert text.splitlines()[0] == head + ("10 classes" if out == (10,) else "output 1x28x28")
    assert f"{params:,}" in text.splitlines()[-1]


@needs("conv1d", "conv3d", "conv_transpose2d")
def test_warmup_runs_the_new_models(monkeypatch):
    """'numbacnn warmup' trains every zoo model a step: the image-to-image one on mse, each of its variants."""
    from numbacnn import _jit, warmup

    monkeypatch.setattr(_jit, "CACHE", True)
    names = ["alexnet_small", "text_cnn", "c3d_small", "encoder_decoder"]
    report = warmup.warmup(models=names, layers=[], losses=[], optimizers=[])
    assert [item.name for item in report.items] == [f"model {n}" for n in names]
    assert all(item.skipped is None and not item.notes for item in report.items)
    assert warmup.MODEL_VARIANTS["encoder_decoder"] == tuple(zoo.ENCODER_DECODER_VARIANTS)
