"""Cold start: a fresh Python process, from its start to the end of the first training step of
network3's two-conv net (batch 64: forward, cross-entropy, backward, SGD step).

Peers: numbacnn with a warm Numba cache (the default cache location, filled by one untimed
run first), numbacnn with an empty cache (``NUMBA_CACHE_DIR`` pointed at a new temporary
directory every round: every kernel compiles), and PyTorch. The benchmark times the whole
process (exit included); ``extra_info["to_first_step_s"]`` holds the median time from just
before the process is spawned to the end of the first step, read off the monotonic clock the
child prints, which is the number the report shows.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from _peers import THREADS

REPO = Path(__file__).resolve().parents[1]
BATCH = 64

NUMBACNN_STEP = """
import numpy as np
import numbacnn as nc
model = nc.zoo.network3(seed=0)
opt = nc.optim.SGD(model, lr=0.03, momentum=0.9)
rng = np.random.default_rng(0)
x = rng.standard_normal(({n}, 1, 28, 28), dtype=np.float32)
labels = rng.integers(0, 10, {n})
opt.zero_grad()
loss, gy = nc.losses.cross_entropy(model.forward(x, training=True), labels)
model.backward(gy, input_grad=False)
opt.step()
"""

TORCH_STEP = """
import numpy as np
import torch
torch.set_num_threads({threads})
f = torch.nn.functional
net = torch.nn.Sequential(torch.nn.Conv2d(1, 20, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
                          torch.nn.Conv2d(20, 40, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
                          torch.nn.Flatten(), torch.nn.Linear(640, 100), torch.nn.ReLU(),
                          torch.nn.Linear(100, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
rng = np.random.default_rng(0)
x = torch.from_numpy(rng.standard_normal(({n}, 1, 28, 28), dtype=np.float32))
labels = torch.from_numpy(rng.integers(0, 10, {n}))
opt.zero_grad()
loss = f.cross_entropy(net(x), labels)
loss.backward()
opt.step()
loss = loss.item()
"""

STAMP = "\nimport time\nprint('END', time.monotonic())\n"


def _env(cache_dir: str | None) -> dict[str, str]:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               OMP_NUM_THREADS=str(THREADS))
    env.pop("NUMBA_CACHE_DIR", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def _spawn(code: str, env: dict[str, str]) -> float:
    """Seconds from just before the spawn to the end of the child's first step."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code + STAMP], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"cold-start child failed:\n{done.stderr[-3000:]}")
    end = float(done.stdout.strip().splitlines()[-1].split()[1])
    return end - start


def _run(benchmark: Any, record: Any, peer: str, code: str, env: Callable[[], dict[str, str]],
         rounds: int) -> None:
    times: list[float] = []
    record("cold start", "cpu", f"network3 first train step N{BATCH}", peer, BATCH)
    benchmark.pedantic(lambda: times.append(_spawn(code, env())), rounds=rounds, iterations=1)
    benchmark.extra_info["to_first_step_s"] = statistics.median(times)


def test_cold_start_numbacnn_warm_cache(benchmark: Any, record: Any, smoke: bool) -> None:
    code = NUMBACNN_STEP.format(n=BATCH)
    if not smoke:
        _spawn(code, _env(None))  # fills the default cache, untimed
    _run(benchmark, record, "numbacnn warm cache", code, lambda: _env(None), rounds=3)


def test_cold_start_numbacnn_empty_cache(benchmark: Any, record: Any, tmp_path: Path, smoke: bool) -> None:
    dirs = iter(range(1_000))
    # Smoke mode (CI) spawns the same child against the warm cache: compiling every network3
    # kernel again (about 28 s of CPU) would check nothing the CPU suite has not.
    env = (lambda: _env(None)) if smoke else (lambda: _env(str(tmp_path / f"numba-cache-{next(dirs)}")))
    _run(benchmark, record, "numbacnn empty cache", NUMBACNN_STEP.format(n=BATCH), env, rounds=2)


def test_cold_start_torch(benchmark: Any, record: Any) -> None:
    pytest.importorskip("torch")
    _run(benchmark, record, "torch", TORCH_STEP.format(n=BATCH, threads=THREADS), lambda: _env(None), rounds=3)
