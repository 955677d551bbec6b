"""pytest plugin (entry point ``pytest11``): the conformance kit for layer authors.

Loaded by pytest wherever numbacnn is installed, so a plugin's own tests need no conftest:

- fixture ``check_layer``: ``numbacnn.testing.check_layer``;
- fixture ``numbacnn_cuda``: the device name ``"cuda"``; a test that asks for it is marked
  ``cuda`` (select with ``-m cuda``, leave out with ``-m "not cuda"``) and skipped unless a
  GPU or the simulator (``NUMBA_ENABLE_CUDASIM=1``) is available;
- fixture ``benchmark_layer``: ``numbacnn.testing.benchmark_layer`` with the test's
  pytest-benchmark ``benchmark`` fixture filled in; a test that asks for it is skipped, saying
  why, where pytest-benchmark is not installed (or is disabled with ``-p no:benchmark``).

It touches no test that does not ask for its fixtures.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

CUDA_FIXTURE = "numbacnn_cuda"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: runs CUDA kernels (on a GPU, or under NUMBA_ENABLE_CUDASIM=1)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Before -m deselects: a test using the CUDA fixture counts as a cuda test.
    for item in items:
        if CUDA_FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker("cuda") is None:
            item.add_marker(pytest.mark.cuda)


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

    return functools.partial(run, _LazyBenchmark(request))


class _LazyBenchmark:
    """pytest-benchmark's fixture, asked for when first used: a test that stops before the
    timer (a layer whose kernels are not written yet skips) leaves it unmade, so
    pytest-benchmark does not warn that it went unused."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        object.__setattr__(self, "_request", request)

    def _fixture(self) -> Any:
        return self._request.getfixturevalue("benchmark")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fixture()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fixture(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fixture(), name, value)
