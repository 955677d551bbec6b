import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from numbacnn.cli import main
from numbacnn.train import Trainer


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
    assert main(["summary", "--model", "network3", "--variant", "conv2", "--data", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "85,670" in out.splitlines()[-1]
    assert main(["summary", "--model", "lenet5", "--input-shape", "1,8,8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lenet5: input 1x8x8 (--input-shape), 10 classes") and "21,386" in out


def test_summary_shows_the_model_train_trains(capsys):
    # 'numbacnn train' trains lenet5 on the 8x8 digits by default; summary shows that model.
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lenet5: input 1x8x8 (digits images, as 'numbacnn train --data digits')")
    assert "(1, 8, 8)" in out and "21,386" in out.splitlines()[-1]
    assert main(["summary", "--data", "cifar10"]) == 0
    assert "input 3x32x32" in capsys.readouterr().out


@pytest.mark.parametrize("argv,rc,match", [
    (["train", "--model", "alexnet"], 2, "invalid choice: 'alexnet'"),
    (["train", "--variant", "conv2"], 2, "--variant applies to network3 and encoder_decoder only, not lenet5"),
    (["train", "--epochs", "0"], 2, "--epochs and --batch-size must be at least 1"),
    (["summary", "--model", "vgg_small", "--input-shape", "3,4,4"], 1, "at least 8x8"),
    (["train", "--data", "cifar10"], 2, "--data cifar10 needs --data-dir FOLDER"),
    (["train", "--data-dir", "."], 2, "--data-dir does not apply to --data digits"),
    (["train", "--download"], 2, "--download applies to the MNIST datasets only .*, not digits"),
    (["train", "--data", "cifar10", "--data-dir", ".", "--download"], 2, "--download applies to"),
    (["train", "--checkpoint", "nowhere/x.npz"], 1, "nowhere/x.npz: cannot write the checkpoint there: the folder"),
    (["train", "--checkpoint", "."], 1, r"\.: is a folder"),
    (["train", "--model", "network3"], 1, r"network3 does not fit digits images \(1, 8, 8\): .*choose a --data"),
    (["summary", "--model", "network3"], 1, r"network3 does not fit digits images"),
    (["summary", "--data", "mnist", "--input-shape", "1,8,8"], 2, "give --data or --input-shape, not both"),
    (["evaluate", "weights.npy"], 1, r"weights.npy: a single NumPy array \(.npy\), not a numbacnn checkpoint"),
    (["evaluate", "bad-json.npz"], 1, "bad-json.npz: corrupt checkpoint: its model spec is not valid JSON"),
    (["train", "--augment", "rotate"], 1, "unknown augmentation 'rotate'"),
    (["evaluate", "missing.npz"], 1, "missing.npz: no such checkpoint file"),
    (["evaluate", "junk.npz"], 1, "junk.npz: not a numbacnn checkpoint"),
    (["summary", "--input-shape", "1"], 2, r"expected two to four positive sizes \(C,L; C,H,W; C,D,H,W\)"),
    (["summary", "--input-shape", "1,2"], 1, r"lenet5: input_shape must be three positive sizes \(C, H, W\)"),
    (["summary", "--model", "network3", "--variant", "conv9"], 1, "unknown variant 'conv9'"),
])
def test_user_errors_are_one_line(argv, rc, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.save(tmp_path / "weights.npy", np.zeros(3))
    with open(tmp_path / "bad-json.npz", "wb") as f:
        np.savez(f, spec=np.frombuffer(b"{", np.uint8))
    assert main(argv) == rc
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(match, err), err


def test_mnist_errors_name_the_file_and_the_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "mnist-t10k", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte.gz: no such file" in err and err.count("\n") == 1
    assert "add --download to fetch MNIST, or --data-dir FOLDER" in err and "download=True" not in err
    assert main(["evaluate", "m.npz", "--data", "mnist", "--data-dir", str(tmp_path)]) == 1  # the checkpoint first
    assert "m.npz: no such checkpoint file" in capsys.readouterr().err


# checkpoints are never replaced unasked, and training problems say what to do -------------------
@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a command reads its dataset (the checks must come before)."""
    import numbacnn.data

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(numbacnn.data, "load_dataset", refuse)


@pytest.mark.parametrize("argv", [[], ["--checkpoint", "lenet5-digits.npz"], ["--epochs", "3"]])
def test_existing_checkpoint_is_not_replaced_without_overwrite(argv, tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5-digits.npz").write_bytes(b"an earlier run")
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err == ("error: lenet5-digits.npz exists: add --overwrite to replace it, or --resume to continue "
                   "training it\n")
    assert (tmp_path / "lenet5-digits.npz").read_bytes() == b"an earlier run"


def good_checkpoint(path):
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--quiet", "--checkpoint", str(path)]) == 0
    return path.read_bytes()


def test_overwrite_replaces_and_divergence_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    import numbacnn.losses

    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "run.npz"
    good = good_checkpoint(ck)
    real, calls = numbacnn.losses.cross_entropy_counted, []

    def nan_at_third(*args, **kwargs):
        calls.append(1)
        loss, gy, hits = real(*args, **kwargs)
        return (float("nan") if len(calls) == 3 else loss), gy, hits

    monkeypatch.setattr(numbacnn.losses, "cross_entropy_counted", nan_at_third)
    # --resume continues in its own checkpoint; a run that diverges leaves it as it was.
    argv = ["train", "--epochs", "2", "--batch-size", "256", "--quiet", "--checkpoint", "run.npz"]
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: training diverged at epoch 2/2, batch 3/6: the loss is nan; the checkpoint "
                        r"run.npz still holds epoch 1, the last finished. Try a lower --lr in a new run \(--resume "
                        r"keeps the checkpoint's rate\); the rate was \S+ there.\n", err), err
    assert ck.read_bytes() == good
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--overwrite"]) == 0
    assert ck.read_bytes() != good


def test_interrupt_says_how_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real, calls = Trainer.train_step, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # epoch 2 of 6 batches, batch 2
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(["train", "--epochs", "2", "--batch-size", "256", "--quiet", "--seed", "3"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted; lenet5-digits.npz holds epoch 1 of 2, "
                                                   "the last finished; continue with: numbacnn train ")
    command = err.split("continue with: ")[1].strip()
    assert command == ("numbacnn train --epochs 2 --batch-size 256 --quiet --seed 3 --resume "
                       "--checkpoint lenet5-digits.npz")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[1:]) == 0
    assert "after 2 epochs" in capsys.readouterr().out


def test_interrupt_before_the_first_epoch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(["train", "--quiet"]) == 130
    assert capsys.readouterr().err == ("error: interrupted before the first epoch finished; lenet5-digits.npz "
                                       "was not written\n")


def test_divergence_exits_nonzero_in_one_line_keeping_the_checkpoint(tmp_path):
    """The console command, in a process of its own: no traceback, the earlier checkpoint intact."""
    ck = tmp_path / "good.npz"
    good = good_checkpoint(ck)
    command = "import sys; from numbacnn.cli import main; sys.exit(main())"  # the console script
    r = subprocess.run([sys.executable, "-c", command, "train", "--epochs", "2", "--lr", "1e6", "--overwrite",
                        "--checkpoint", str(ck), "--batch-size", "256"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    # On an empty Numba cache the compile progress comes first (its header, "  compiled K (s)"
    # lines and a summary); the error itself is one line, the last, with no traceback.
    progress = ("compiling Numba kernels", "  compiled ", "compiled ")
    lines = [line for line in r.stderr.splitlines(keepends=True) if not line.startswith(progress)]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.endswith(lines[0])
    assert re.match(r"error: training diverged at epoch 1/2, batch \d/6: the loss is nan; no checkpoint was "
                    r"written \(.*good.npz is unchanged\). Try a lower --lr; the rate was 1e\+06 there.\n",
                    lines[0]), r.stderr
    assert ck.read_bytes() == good


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
