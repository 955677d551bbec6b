"""Under NUMBA_BOUNDSCHECK=1 gemm checks its operands' extents (BLAS gets raw pointers, which
Numba's bounds checks cannot follow): a product whose rows run past an array raises
IndexError instead of reading or writing past it."""

import os
import subprocess
import sys

CODE = """
import numpy as np
from numbacnn._blas import gemm
from numbacnn._jit import cpu_serial

@cpu_serial
def product(ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
    gemm(ta, tb, m, n, k, a, lda, b, ldb, 0, c, ldc)

a, b, c = np.ones(6), np.ones(10), np.zeros(8)
product(False, False, 2, 2, 3, a, 3, b, 4, c, 4)  # (2, 3) @ (3, 2) in rows of 4: fits
assert c[0] == 3 and c[2] == 0, c
for args in [(False, False, 2, 2, 3, a[:5], 3, b, 4, c, 4),   # a one short
             (True, False, 2, 2, 3, a, 3, b, 4, c, 4),        # a^T stored (3, 2) in rows of 3: 8 > 6
             (False, True, 2, 2, 3, a, 3, b[:4], 3, c, 4),    # b^T stored (2, 3) in rows of 3: 6 > 4
             (False, False, 2, 2, 3, a, 3, b, 4, c[:5], 4),   # c's second row runs past it
             (False, False, 2, 3, 2, a, 3, b, 2, c, 4)]:      # b's rows overlap (stride 2 < 3 columns)
    try:
        product(*args)
    except IndexError:
        continue
    raise SystemExit(f"no IndexError for {args[:5]}")
print("ok")
"""


def test_gemm_checks_extents_under_numba_boundscheck():
    # A fresh process (the flag is read when Numba is imported), nothing cached: kernels
    # compiled with and without the check must never serve each other.
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBACNN_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout[-1000:] + out.stderr[-2000:]
