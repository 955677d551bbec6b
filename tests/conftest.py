"""Shared test setup: CUDA-marked tests run only where CUDA or the simulator is available.

The CPU suite runs with ``-m "not cuda"``; the CUDA suite runs in its own process with
``NUMBA_ENABLE_CUDASIM=1`` (or on a GPU) and ``-m cuda``, so the variable never leaks.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

# No background compile worker unless a test asks for one (tests/test_precompile.py): tests that
# count what a cold process compiles must not depend on how idle the machine is. Subprocesses
# inherit it.
os.environ.setdefault("NUMBACNN_PRECOMPILE", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from numbacnn.device import cuda_available

    if any(item.get_closest_marker("cuda") for item in items) and not cuda_available():
        skip = pytest.mark.skip(reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set")
        for item in items:
            if item.get_closest_marker("cuda"):
                item.add_marker(skip)


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST test set beside the checkout (skips when it is absent)."""
    path = Path(os.environ.get("NUMBACNN_MNIST_DIR", MNIST_DIR))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found in {path}")
    return path


def _gather(n: int, fn: Callable[[int], Any]) -> list[Any]:
    start = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,), name=f"worker{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def gather() -> Callable[[int, Callable[[int], Any]], list[Any]]:
    """``gather(n, fn)``: run ``fn(i)`` in ``n`` threads started together and return the
    results; the first failure is re-raised."""
    return _gather
