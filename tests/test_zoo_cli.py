"""'numbacnn train' on the second-phase datasets: image targets train on mean squared error."""

import re

import numpy as np
import pytest

import numbacnn.data
from numbacnn import zoo
from numbacnn._mnist_tasks import make_task
from numbacnn.cli import main


@pytest.fixture
def small_denoise(monkeypatch):
    """mnist-denoise-t10k's pairs made from 80 random images: 64 train, 16 held out."""
    real = numbacnn.data.load_dataset
    x = np.random.default_rng(0).random((80, 1, 28, 28), dtype=np.float32)
    pairs = make_task("denoise", x, np.zeros(80, np.int64))

    def load(name, path=None, download=False):
        if name != "mnist-denoise-t10k":
            return real(name, path, download)
        return numbacnn.data.train_test_split(*pairs, test_size=16, shuffle=False)

    monkeypatch.setattr(numbacnn.data, "load_dataset", load)


def test_encoder_decoder_trains_on_mse_and_evaluates(small_denoise, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "encoder_decoder", "--variant", "resize", "--data", "mnist-denoise-t10k",
            "--epochs", "2", "--optimizer", "adam", "--lr", "0.003", "--batch-size", "16"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training encoder_decoder (9,569 parameters) on mnist-denoise-t10k: 64 images, 16 held out" in out
    first, last = (float(m) for m in re.findall(r"val_loss (\d+\.\d+)", out))
    mse = float(re.search(r"held-out mse (\d+\.\d+) on 16 images after 2 epochs", out).group(1))
    assert last < first and abs(mse - last) < 1e-4 and "accuracy" not in out
    assert main(["evaluate", "encoder_decoder-mnist-denoise-t10k.npz"]) == 0
    again = capsys.readouterr().out
    assert re.search(r"on mnist-denoise-t10k \(16 held-out images\): mse (\d+\.\d+)", again)
    assert abs(float(re.search(r"mse (\d+\.\d+)", again).group(1)) - mse) < 1e-4


@pytest.mark.parametrize("model,data,match", [
    (lambda: zoo.lenet5(), "mnist-denoise-t10k",
     r"mnist-denoise-t10k has target images \(1, 28, 28\), the model in m.npz outputs \(10,\); evaluate it"),
    (lambda: zoo.encoder_decoder("resize", input_shape=(1, 8, 8)), "digits",
     r"digits has class labels, the model in m.npz outputs \(1, 8, 8\)"),
])
def test_evaluate_refuses_a_checkpoint_of_the_other_kind(model, data, match, small_denoise, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    model().save("m.npz")
    assert main(["evaluate", "m.npz", "--data", data]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(match, err), err


@pytest.mark.parametrize("argv,match", [
    (["--model", "lenet5", "--data", "mnist-denoise-t10k"],
     "--model lenet5 does not fit --data mnist-denoise-t10k: mnist-denoise-t10k has image targets .*encoder_decoder"),
    (["--model", "encoder_decoder"],
     "--model encoder_decoder does not fit --data digits: encoder_decoder maps images to images; train it on "
     "mnist-denoise-t10k"),
    (["--model", "lenet5", "--variant", "resize"], "--variant applies to network3 and encoder_decoder only"),
])
def test_model_and_task_must_agree(argv, match, small_denoise, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(match, err), err
    assert not list(tmp_path.iterdir())  # refused before training: no checkpoint
