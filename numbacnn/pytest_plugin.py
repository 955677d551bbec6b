"""pytest plugin (entry point ``pytest11``): the ``check_layer`` fixture for layer authors."""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.fixture
def check_layer() -> Callable[..., Any]:
    """``numbacnn.testing.check_layer``, importable without a conftest."""
    from .testing import check_layer as check

    return check
