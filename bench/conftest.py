"""Benchmark session setup: both engines pinned to the same thread count, smoke mode, GPU skips.

Threads: ``NUMBACNN_BENCH_THREADS`` (default 2) is applied when the session starts, never at
``import numbacnn``: Numba's parallel kernels (``numba.set_num_threads``), PyTorch's intra-op
pool (``torch.set_num_threads``) and NumPy's BLAS (through threadpoolctl when it is installed;
otherwise BLAS keeps its default, which on a 2-core machine is the same).

Separate cores: before and after every timed row (not in smoke mode), ``_machine.quick_speedup``
reads how much faster two BLAS threads multiply than one, into the row's ``extra_info["cores"]``;
the report marks a group whose rows saw the host run its CPUs on one core. With
``NUMBACNN_BENCH_WAIT_CORES`` seconds (``bench/report.py --wait-cores``; default 0 here) each row
first waits that long at most for separate cores.

Smoke mode is ``--benchmark-disable`` (CI): every benchmark runs its code path once, and the
``smoke`` fixture tells workloads to cut their batch (see ``_peers.SMOKE_BATCH``) so the whole
suite stays well under a minute plus compile time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench helpers (_peers)

from _machine import Waits, after_reading  # noqa: E402
from _peers import THREADS  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a real GPU (run with -m gpu)")


def real_gpu() -> bool:
    from numbacnn.device import cuda_available, is_simulator

    return not is_simulator() and cuda_available()


# Rows that measure in processes of their own run after every timed row: their children (a
# ResNet's 2 GB inference in PyTorch among them) leave the machine slow for tens of seconds.
# network3's batch-10 step took 1.9 ms right after the memory rows against 0.9-1.0 ms on its
# own, in the same quiet minute (PyTorch's 2.6 against 2.5-2.9 ms).
SPAWNING = ("test_models_memory.py", "test_cold_start.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in SPAWNING)  # stable: the rest keep their order
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not real_gpu():
        skip = pytest.mark.skip(reason="no CUDA GPU (the simulator is not timed)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def pinned_threads() -> Iterator[int]:
    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield THREADS
        return
    with threadpool_limits(limits=THREADS, user_api="blas"):
        yield THREADS


@pytest.fixture(scope="session")
def smoke(request: pytest.FixtureRequest) -> bool:
    """True under ``--benchmark-disable``: run every path once, on cut-down batches."""
    return bool(request.config.getoption("benchmark_disable", False))


_waits = Waits()  # the session's: it stops waiting after three waits in a row ran out


@pytest.fixture(autouse=True)
def separate_cores(request: pytest.FixtureRequest, smoke: bool) -> Iterator[None]:
    """A timed CPU row's quick_speedup readings before and after it (``cores``), and the seconds
    it waited for separate cores first (``cores_waited_s``)."""
    if smoke or THREADS < 2 or "benchmark" not in request.fixturenames or request.node.get_closest_marker("gpu"):
        yield
        return
    before, waited = _waits(THREADS, float(os.environ.get("NUMBACNN_BENCH_WAIT_CORES", "0")))
    yield
    benchmark = request.node.funcargs.get("benchmark")  # absent where the row skipped before it
    if benchmark is not None and before is not None:  # None: no threadpoolctl, no reading
        benchmark.extra_info.update(cores=[before, after_reading(THREADS)], cores_waited_s=round(waited, 1))


@pytest.fixture
def record(benchmark: Any) -> Any:
    """``record(kind, device, workload, peer, batch, flops=0)``: group the peers of one
    workload and note what the report needs to read ratios off them.

    ``flops``: floating-point operations of one timed call (0: not a FLOP-bound workload).
    """

    def label(kind: str, device: str, workload: str, peer: str, batch: int, flops: int = 0) -> None:
        benchmark.group = f"{kind} {device} {workload}"
        benchmark.extra_info.update(kind=kind, device=device, workload=workload, peer=peer,
                                    batch=batch, flops=int(flops), threads=THREADS)

    return label
