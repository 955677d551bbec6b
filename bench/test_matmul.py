"""The machine's ceiling: float32 matrix multiply, 2048 x 2048, with the session's threads;
on a GPU (``-m gpu``) PyTorch's float32 8192 x 8192 product on CUDA.

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


GPU_SIZE = 8192


@pytest.mark.gpu
def test_matmul_gpu(benchmark: Any, record: Any, smoke: bool) -> None:
    """The device's ceiling: PyTorch's float32 matmul on CUDA (cuBLAS SGEMM, TF32 off, so it is
    the rate a float32 product can reach there), which the report divides the GPU rows' GFLOP/s
    by."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA")
    n = 512 if smoke else GPU_SIZE
    gen = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn((n, n), generator=gen, device="cuda", dtype=torch.float32) for _ in range(2))
    out = torch.empty((n, n), device="cuda", dtype=torch.float32)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        def fn() -> None:
            torch.matmul(a, b, out=out)
            torch.cuda.synchronize()

        fn()
        record("matmul", "cuda", f"float32 {GPU_SIZE}x{GPU_SIZE}", "torch", n, 2 * n ** 3)
        benchmark(fn)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
