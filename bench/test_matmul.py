"""The machine's ceiling: float32 matrix multiply, 2048 x 2048, with the session's threads.

NumPy's ``a @ b`` (its BLAS) is the ceiling the report divides achieved GFLOP/s by; PyTorch's
``a @ b`` sits in the same group for reference (its BLAS may differ). Smoke mode: 256 x 256.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

SIZE = 2048


@pytest.mark.parametrize("peer", ["numpy", "torch"])
def test_matmul_cpu(benchmark: Any, record: Any, smoke: bool, peer: str) -> None:
    n = 256 if smoke else SIZE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    if peer == "numpy":
        fn = lambda: np.matmul(a, b, out=out)
    else:
        torch = pytest.importorskip("torch")
        at, bt, ot = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        fn = lambda: torch.matmul(at, bt, out=ot)
    fn()
    record("matmul", "cpu", f"float32 {SIZE}x{SIZE}", peer, n, 2 * n ** 3)
    benchmark(fn)
