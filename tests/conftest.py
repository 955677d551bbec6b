"""Shared test setup: CUDA-marked tests run only where CUDA or the simulator is available.

The CPU suite runs with ``-m "not cuda"``; the CUDA suite runs in its own process with
``NUMBA_ENABLE_CUDASIM=1`` (or on a GPU) and ``-m cuda``, so the variable never leaks.
"""

from __future__ import annotations

import os
from pathlib import Path

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
