"""Peak resident memory of a zoo model's training step (batch ``TRAIN_BATCH``) and of its
inference at batch ``MEMORY_INFER_BATCH``, numbacnn against PyTorch (the twin with the same
weights), each measured in ``RUNS`` fresh processes (``_memory_child.py``: warm-up at batch 2,
peak reset, one step; see its docstring) on ``THREADS`` threads, the median kept.

The numbers travel in the benchmark's ``extra_info`` (kind ``memory``: ``delta_mb``,
``peak_mb``, ``baseline_mb``, ``method``, and ``delta_mb_runs``: every child's); the benchmark's
own time is the children's wall time and means nothing. ``report.py`` prints them as the memory table. Under
``--benchmark-disable`` (CI smoke) only lenet5's children run, at batch 2: the path is
checked, nothing is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _peers import SMOKE_BATCH, THREADS
from _zoo import MEMORY_INFER_BATCH, MODELS, TRAIN_BATCH, build, workload

CHILD = Path(__file__).resolve().parent / "_memory_child.py"
TIMEOUT_S = 900  # an empty Numba cache compiles the model's kernels inside the child
# Children per row; the row is the one with the median delta. One child is not a measure:
# PyTorch's vgg_small training step read 25.6 to 36.4 MB over seven fresh processes in a row
# (numbacnn's 26.3 to 27.5), which flipped the row's verdict from run to run.
RUNS = 3


def measure(engine: str, name: str, mode: str, batch: int) -> dict[str, Any]:
    """Run one child; its JSON line, or an error carrying the child's stderr."""
    cmd = [sys.executable, str(CHILD), engine, name, mode, str(batch), str(THREADS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(f"memory child {engine} {name} {mode} N{batch} failed "
                             f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ["numbacnn", "torch"])
@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("name", MODELS)
def test_model_memory_cpu(benchmark: Any, record: Any, smoke: bool, name: str, mode: str, engine: str) -> None:
    pytest.importorskip("torch")
    if smoke and name != MODELS[0]:
        pytest.skip(f"smoke: only {MODELS[0]}'s memory children run")
    batch = TRAIN_BATCH if mode == "train" else MEMORY_INFER_BATCH
    run_batch = SMOKE_BATCH if smoke else batch
    runs: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: runs.extend(measure(engine, name, mode, run_batch) for _ in range(1 if smoke else RUNS)),
                       rounds=1, iterations=1)
    result = sorted(runs, key=lambda r: r["delta_mb"])[len(runs) // 2]
    assert result["peak_mb"] > 0 and result["delta_mb"] >= 0, result
    record("memory", "cpu", f"{name} {mode} {workload(build(name), batch)}", engine, run_batch)
    benchmark.extra_info.update(model=name, mode=mode, delta_mb_runs=[r["delta_mb"] for r in runs],
                                **{k: result[k] for k in ("delta_mb", "peak_mb", "baseline_mb", "maxrss_mb", "method")})
