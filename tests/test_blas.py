"""numbacnn._blas.gemm against NumPy: transposes, row strides, beta, both dtypes, both BLAS."""

import os
import subprocess
import sys

import numpy as np
import pytest

from numbacnn._blas import gemm
from numbacnn._jit import cpu_serial


@cpu_serial
def _call(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)


def check_gemm(dtype) -> None:
    rng = np.random.default_rng(0)
    m, n, k = 5, 7, 3
    for ta in (False, True):
        for tb in (False, True):
            for beta in (0, 1):
                # Matrices stored with wider rows than they use (the convolution's column
                # blocks of gy[n]), read through their row strides.
                A = rng.standard_normal((k, m + 2) if ta else (m, k + 2)).astype(dtype)
                B = rng.standard_normal((n, k + 1) if tb else (k, n + 1)).astype(dtype)
                C = rng.standard_normal((m, n + 3)).astype(dtype)
                opa = A[:, :m].T if ta else A[:, :k]
                opb = B[:, :k].T if tb else B[:, :n]
                want = opa.astype(np.float64) @ opb + (beta * C[:, :n] if beta else 0)
                if not beta:
                    C[:, :n] = np.nan  # beta 0 ignores what C held
                before = C[:, n:].copy()
                _call(ta, tb, m, n, k, A.ravel(), A.shape[1], B.ravel(), B.shape[1], beta, C.ravel(), C.shape[1])
                tol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(C[:, :n], want, rtol=tol, atol=tol)
                np.testing.assert_array_equal(C[:, n:], before)  # outside the block: untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_matches_numpy(dtype):
    check_gemm(dtype)


def test_gemm_through_the_scipy_fallback():
    # NUMBACNN_BLAS=scipy registers the C-callable fallbacks over SciPy's BLAS instead of
    # NumPy's OpenBLAS: same results (a fresh process: the choice is made at import).
    code = ("import numpy as np, numbacnn._blas as b, sys; sys.path.insert(0, %r); import test_blas as t; "
            "assert 'SciPy' in b.BLAS, b.BLAS; assert b.BLAS_FALLBACK_REASON == 'NUMBACNN_BLAS=scipy is set'; "
            "t.check_gemm(np.float32); t.check_gemm(np.float64); print('ok')"
            % os.path.dirname(__file__))
    env = {**os.environ, "NUMBACNN_BLAS": "scipy"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_scipy_fallback_allocates_nothing_per_call():
    # Fortran BLAS takes alpha and beta by address: they live in the cfunc's stack frame, not
    # in an array allocated (and freed) on every product.
    from numbacnn import _blas

    for kind, signature in ((ord("s"), _blas._SGEMM), (ord("d"), _blas._DGEMM)):
        ir = _blas._fallback(kind, signature).inspect_llvm()
        assert "numba_xxgemm" in ir
        assert "NRT_MemInfo_alloc" not in ir and "NRT_Allocate" not in ir


def test_blas_choice_is_inspectable(tmp_path, monkeypatch, recwarn):
    from numbacnn import _blas

    if "openblas64" in _blas.BLAS:  # NumPy's wheel: its library is used, nothing to explain
        assert _blas.BLAS_FALLBACK_REASON is None
    monkeypatch.setattr(_blas.glob, "glob", lambda pattern: [])
    assert _blas._numpy_cblas().startswith("NumPy bundles no 64-bit-integer OpenBLAS")
    assert not recwarn.list  # an MKL or system-BLAS NumPy is a build choice, not a fault
    broken = tmp_path / "libscipy_openblas64_-broken.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(_blas.glob, "glob", lambda pattern: [str(broken)])
    with pytest.warns(RuntimeWarning, match="NumPy's bundled OpenBLAS could not be used .*broken.so.*SciPy's BLAS"):
        assert "could not be used" in _blas._numpy_cblas()


def test_small_cols_blocks_fit_openblas_small_products_and_cover_the_columns():
    # The im2col forward multiplies in column blocks of small_cols(m, n, k): each block's
    # product within SMALL_PRODUCT (OpenBLAS's unpacked small-matrix kernels), the blocks
    # covering all n columns, none but the last narrower than SMALL_MIN_COLS; n whole when the
    # product fits or when blocks that fit would be narrower than that.
    from numbacnn._blas import SMALL_MIN_COLS, SMALL_PRODUCT, small_cols

    rng = np.random.default_rng(3)
    cases = [(16, 1024, 64), (64, 1023, 16), (40, 1073, 48), (128, 64, 128), (1, 1, 1), (3, 0, 5)]
    cases += [tuple(int(v) for v in rng.integers(1, 2048, 3)) for _ in range(2000)]
    for m, n, k in cases:
        cb = small_cols(m, n, k)
        assert cb >= 1, (m, n, k)
        if m * n * k <= SMALL_PRODUCT or m * k * SMALL_MIN_COLS > SMALL_PRODUCT:
            assert cb == max(n, 1), (m, n, k, cb)
            continue
        assert m * cb * k <= SMALL_PRODUCT and cb % 16 == 0 and SMALL_MIN_COLS <= cb < n, (m, n, k, cb)
        blocks = -(-n // cb)
        widest = SMALL_PRODUCT // (m * k) // 16 * 16
        assert blocks == -(-n // widest), (m, n, k, cb)  # no more blocks than the fewest that fit
