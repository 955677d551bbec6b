import re
import subprocess
import sys
import time

import pytest

from numbacnn.cli import main


@pytest.fixture
def slow(request):
    """Slow tests run only when asked for: ``python -m pytest -m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow: run with -m slow")


def accuracy(text):
    return float(re.search(r"accuracy (\d+\.\d+)%", text).group(1))


def test_train_evaluate_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "after 1 epochs" in out and "lenet5-digits.npz" in out
    assert (tmp_path / "lenet5-digits.npz").exists()
    assert main(["evaluate", "lenet5-digits.npz"]) == 0  # the checkpoint knows its dataset
    again = capsys.readouterr().out
    assert "on digits (359 held-out images)" in again and accuracy(again) == accuracy(out)
    assert main(["train", "--epochs", "2", "--resume", "--checkpoint", "lenet5-digits.npz"]) == 0
    out = capsys.readouterr().out
    assert "after 2 epochs" in out and out.count("epoch 2/2") == 1 and "epoch 1/2" not in out


def test_summary(capsys):
    assert main(["summary", "--model", "network3", "--variant", "conv2"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "85,670" in out.splitlines()[-1]
    assert main(["summary", "--model", "lenet5", "--input-shape", "1,8,8"]) == 0
    assert "21,386" in capsys.readouterr().out


@pytest.mark.parametrize("argv,rc,match", [
    (["train", "--model", "alexnet"], 2, "invalid choice: 'alexnet'"),
    (["train", "--variant", "conv2"], 2, "--variant applies to network3 only"),
    (["train", "--epochs", "0"], 2, "--epochs and --batch-size must be at least 1"),
    (["summary", "--model", "vgg_small", "--input-shape", "3,4,4"], 1, "at least 8x8"),
    (["train", "--data", "cifar10"], 1, "cifar10: give the folder"),
    (["train", "--augment", "rotate"], 1, "unknown augmentation 'rotate'"),
    (["evaluate", "missing.npz"], 1, "missing.npz: no such checkpoint file"),
    (["evaluate", "junk.npz"], 1, "junk.npz: not a numbacnn checkpoint"),
    (["summary", "--input-shape", "1,2"], 2, "expected three positive sizes"),
    (["summary", "--model", "network3", "--variant", "conv9"], 1, "unknown variant 'conv9'"),
])
def test_user_errors_are_one_line(argv, rc, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert main(argv) == rc
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(match, err), err


def test_mnist_errors_name_the_file(tmp_path, capsys):
    assert main(["train", "--data", "mnist-t10k", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte.gz: no such file" in err and err.count("\n") == 1


@pytest.mark.slow
def test_default_train_reaches_95_percent_within_a_minute(tmp_path, slow):
    """``numbacnn train`` with no arguments (warm Numba cache: run the suite once before)."""
    t0 = time.perf_counter()
    command = "import sys; from numbacnn.cli import main; sys.exit(main())"  # the console script
    r = subprocess.run([sys.executable, "-c", command, "train"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("img/s") >= 10  # progress, one line per epoch when not on a terminal
    assert accuracy(r.stdout.splitlines()[-1]) >= 95.0, r.stdout
    assert seconds < 60, f"took {seconds:.0f} s"
