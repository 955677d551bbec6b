"""Data-parallel training over MPI: real jobs launched with mpiexec (2 and 4 ranks, one Numba
thread each), checked against one process training on the same samples.

Skipped where numbacnn[distributed] (mpi4py and an mpiexec) is not installed. The jobs share
the parent's Numba cache, so only the first one compiles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

import numbacnn as nc  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import _mpi_job as job  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")]
JOB = str(Path(__file__).parent / "_mpi_job.py")
ONE_THREAD = {k: "1" for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def launch(n: int, *argv: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **ONE_THREAD} if env is None else env
    return subprocess.run([MPIEXEC, "-n", str(n), *argv], env=env, capture_output=True, text=True, timeout=timeout)


def run_job(n: int, out: Path, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    """Launch ``_mpi_job.py`` on n ranks; each rank's weights and notes."""
    done = launch(n, sys.executable, "-m", "mpi4py", JOB, *args[:1], str(out), *args[1:], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = []
    for r in range(n):
        with np.load(out / f"rank{r}.npz") as z:
            notes = json.loads(z["notes"].tobytes().decode())
            ranks.append({"notes": notes, "state": {k: z[k] for k in z.files if k != "notes"}, "out": done.stdout})
    return ranks


def close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    for k in b:
        scale = max(float(np.abs(b[k]).max()), 1e-30)
        assert np.abs(a[k] - b[k]).max() <= rtol * scale, k


def reference(epochs: int, batch_size: int, shuffle: bool, start: Path | None = None) -> nc.Trainer:
    """One process, not distributed, from rank 0's model (seed 100) and trainer seed (7)."""
    (x, y), (xv, yv) = job.data()
    t = job.trainer(job.mlp(seed=100), seed=7, distributed=False)
    if start is not None:
        t.load_checkpoint(start)
    t.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, validation_data=(xv, yv), verbose=0)
    return t


@pytest.fixture(scope="module")
def fit2(tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 ranks, batch 16, shuffle=False, 2 epochs; rank r built its model and trainer from seeds
    100 + r and 7 + r, and was given the checkpoint path ck<r>.npz."""
    out = tmp_path_factory.mktemp("fit2")
    return out, run_job(2, out, "fit", "--shuffle", "0", "--epochs", "2", "--batch-size", "16")


def test_every_rank_ends_with_identical_parameters(fit2):
    _, (r0, r1) = fit2
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        np.testing.assert_array_equal(r0["state"][k], r1["state"][k], err_msg=k)


def test_two_ranks_at_16_train_as_one_process_at_32(fit2):
    """Also shows that rank 1 (seeds 101, 8) trained from rank 0's weights and sample order."""
    _, (r0, _) = fit2
    ref = reference(epochs=2, batch_size=32, shuffle=False)
    close(r0["state"], ref.model.state())
    other = job.mlp(seed=101).state()  # rank 1's own start was far from rank 0's
    assert any(np.abs(other[k] - job.mlp(seed=100).state()[k]).max() > 0.05 for k in other)
    assert r0["notes"]["seed"] == 7 and r0["notes"]["lr"] == pytest.approx(ref.optimizer.lr)
    hist = r0["notes"]["history"]
    for k, v in ref.history.history.items():
        np.testing.assert_allclose(hist[k], v, rtol=1e-5, err_msg=k)  # whole-dataset figures


def test_evaluation_and_history_agree_on_every_rank(fit2):
    _, (r0, r1) = fit2
    assert r0["notes"]["evaluate"] == r1["notes"]["evaluate"]
    assert r0["notes"]["history"] == r1["notes"]["history"]
    # Each of the 99 validation images counted once (no padding): one process's figures.
    (_, _), (xv, yv) = job.data()
    model = job.mlp(seed=0)
    model.load_state(r0["state"])
    alone = nc.Trainer(model).evaluate(xv, yv)
    assert r0["notes"]["evaluate"]["accuracy"] == alone["accuracy"]
    assert r0["notes"]["evaluate"]["loss"] == pytest.approx(alone["loss"], rel=1e-6)


def test_only_rank_0_writes_the_checkpoint(fit2):
    out, (r0, _) = fit2
    assert (out / "ck0.npz").exists() and not (out / "ck1.npz").exists()
    saved = nc.Model.load(out / "ck0.npz").state()
    for k in saved:
        np.testing.assert_array_equal(saved[k], r0["state"][k])
    assert r0["out"].count("epoch 2/2") == 1  # progress printed once, by rank 0


@pytest.mark.parametrize("ranks,batch", [(1, 32), (4, 8)])
def test_resume_a_two_rank_checkpoint_on_other_rank_counts(fit2, tmp_path, ranks, batch):
    """The 2-rank run's epoch-2 checkpoint continued to epoch 4 (shuffled now) on 1 rank at batch
    32 and on 4 ranks at batch 8: the same global batches as one process at batch 32."""
    out, _ = fit2
    shutil.copy(out / "ck0.npz", tmp_path / "ck0.npz")
    ranks_out = run_job(ranks, tmp_path, "fit", "--resume", "--epochs", "4", "--batch-size", str(batch))
    ref = reference(epochs=4, batch_size=32, shuffle=True, start=out / "ck0.npz")
    r0 = ranks_out[0]
    close(r0["state"], ref.model.state())
    for other in ranks_out[1:]:
        for k in r0["state"]:
            np.testing.assert_array_equal(other["state"][k], r0["state"][k])
    notes = r0["notes"]
    assert notes["epoch"] == 4 and notes["epochs"] == [0, 1, 2, 3]
    assert notes["lr"] == pytest.approx(ref.optimizer.lr)  # the schedule went on from epoch 2
    for k, v in ref.history.history.items():
        np.testing.assert_allclose(notes["history"][k], v, rtol=1e-5, err_msg=k)
    assert sorted(p.name for p in tmp_path.glob("ck*.npz")) == ["ck0.npz"]


def test_batch_norm_statistics_and_dropout_stay_identical_over_ranks(tmp_path):
    """Also: without NUMBA_NUM_THREADS, the ranks of one machine share its cores."""
    env = {k: v for k, v in {**os.environ, **ONE_THREAD}.items() if k != "NUMBA_NUM_THREADS"}
    (r0, r1) = run_job(2, tmp_path, "bn", "--epochs", "1", "--batch-size", "16", env=env)
    assert any(k.startswith("buffers/") for k in r0["state"])
    for k in r0["state"]:
        np.testing.assert_array_equal(r0["state"][k], r1["state"][k], err_msg=k)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert r0["notes"]["threads"] == r1["notes"]["threads"] == max(1, cores // 2)


def test_a_rank_that_raises_mid_epoch_ends_the_job(tmp_path):
    t0 = time.monotonic()
    done = launch(2, sys.executable, "-m", "mpi4py", JOB, "fail", str(tmp_path), "--epochs", "1000", timeout=120)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    failed_at = float((tmp_path / "failed_at").read_text())
    assert time.time() - failed_at < 15, "the other rank kept the job alive after the failure"
    assert time.monotonic() - t0 < 120


def test_cli_distributed_trains_and_prints_once(tmp_path):
    ck = tmp_path / "net.npz"
    done = launch(2, sys.executable, "-m", "numbacnn.cli", "train", "--distributed", "--model", "network3",
                  "--variant", "fc", "--epochs", "2", "--batch-size", "16", "--checkpoint", str(ck))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("held-out accuracy") == 1 and done.stdout.count("epoch 2/2") == 1
    assert done.stdout.count("training network3") == 1
    assert ck.exists()


def test_cli_error_on_one_rank_aborts_every_rank(tmp_path):
    """Rank 1 is given a checkpoint folder that does not exist; rank 0 would wait for it forever."""
    base = [sys.executable, "-m", "numbacnn.cli", "train", "--distributed", "--model", "network3", "--variant", "fc",
            "--epochs", "50"]
    t0 = time.monotonic()
    done = launch(1, *base, "--checkpoint", str(tmp_path / "ok.npz"), ":", "-n", "1", *base,
                  "--checkpoint", str(tmp_path / "missing" / "x.npz"), timeout=120)
    assert done.returncode == 1
    assert "rank 1 of 2; stopping every rank" in done.stderr and "missing" in done.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "ok.npz").exists()


def test_a_rank_with_other_settings_is_refused_by_name(tmp_path):
    done = launch(2, sys.executable, "-m", "mpi4py", JOB, "mismatch", str(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "rank 1: batch_size is 8 here but 16 on rank 0" in done.stderr


@pytest.mark.gpu
def test_two_ranks_on_the_gpu_train_as_one_process(tmp_path):
    """Device-resident models: gradients go through the host for MPI, the result is the same."""
    (r0, r1) = run_job(2, tmp_path, "fit", "--shuffle", "0", "--epochs", "2", "--batch-size", "16",
                       "--device", "cuda")
    for k in r0["state"]:
        np.testing.assert_array_equal(r0["state"][k], r1["state"][k], err_msg=k)
    close(r0["state"], reference(epochs=2, batch_size=32, shuffle=False).model.state(), rtol=1e-4)
