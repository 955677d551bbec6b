"""pytest plugin (entry point ``pytest11``): the conformance kit for layer authors.

Loaded by pytest wherever numbacnn is installed, so a plugin's own tests need no conftest:

- fixture ``check_layer``: ``numbacnn.testing.check_layer``;
- fixture ``numbacnn_cuda``: the device name ``"cuda"``; a test that asks for it is marked
  ``cuda`` (select with ``-m cuda``, leave out with ``-m "not cuda"``) and skipped unless a
  GPU or the simulator (``NUMBA_ENABLE_CUDASIM=1``) is available;
- fixture ``benchmark_layer``: ``numbacnn.testing.benchmark_layer`` with the test's
  pytest-benchmark ``benchmark`` fixture filled in; a test that asks for it is a benchmark to
  pytest-benchmark's switches (``--benchmark-skip``, ``--benchmark-only``, ...), and is
  skipped, saying why, where pytest-benchmark is not installed (or ``-p no:benchmark``).

It touches no test that does not ask for its fixtures.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

CUDA_FIXTURE = "numbacnn_cuda"
BENCHMARK_FIXTURE = "benchmark_layer"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: runs CUDA kernels (on a GPU, or under NUMBA_ENABLE_CUDASIM=1)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Before -m deselects: a test using the CUDA fixture counts as a cuda test.
    timing = config.pluginmanager.hasplugin("benchmark")
    for item in items:
        names = getattr(item, "fixturenames", ())
        if CUDA_FIXTURE in names and item.get_closest_marker("cuda") is None:
            item.add_marker(pytest.mark.cuda)
        if timing and BENCHMARK_FIXTURE in names and "benchmark" not in names:
            # A test using benchmark_layer uses pytest-benchmark's fixture: said before
            # pytest-benchmark sorts the tests, --benchmark-skip skips it before anything
            # compiles and --benchmark-only keeps it; made with the test's other fixtures, the
            # fixture learns when the test skips (a layer not written yet) and does not warn.
            names.append("benchmark")


@pytest.fixture
def check_layer() -> Callable[..., Any]:
    """``numbacnn.testing.check_layer``."""
    from numbacnn.testing import check_layer as check

    return check


@pytest.fixture
def numbacnn_cuda() -> str:
    """``"cuda"`` where numbacnn's CUDA kernels can run (GPU or simulator); skips otherwise."""
    from numbacnn.device import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set")
    return "cuda"


@pytest.fixture
def benchmark_layer(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """``numbacnn.testing.benchmark_layer`` bound to this test's ``benchmark`` fixture:
    ``benchmark_layer(layer, input_shapes, mode=..., peer=..., reference=...)``."""
    if not request.config.pluginmanager.hasplugin("benchmark"):
        pytest.skip("benchmark_layer needs pytest-benchmark: pip install pytest-benchmark "
                    "(or drop -p no:benchmark)")
    from numbacnn.testing import benchmark_layer as run

    return functools.partial(run, request.getfixturevalue("benchmark"))
