"""``cpu_call`` helpers: typed once per argument types, inlined by LLVM, cached with their kernels.

``cpu_inline`` copies a helper into every call site at Numba's IR level, where it is typed
again (and once more in a ``prange`` body's own compile); Winograd's tile transforms, called
16-64 times a tile routine, spent most of their kernels' compile there. A ``cpu_call`` helper
compiles once per argument types, is linked into the kernels that call it (``_parfor_link``)
and inlined there by LLVM, so the code that runs is the same.
"""

import json
import os
import subprocess
import sys

import numba
import numpy as np

from numbacnn import _blas
from numbacnn._jit import cpu_kernel, prange
from numbacnn.warmup import compiled_kernels

_MODULE = '''
import numpy as np
from numbacnn._jit import cpu_call, cpu_kernel, prange


@cpu_call
def mix(a, b, c):
    return a[0] * c + a[1], a[1] - b, a[0] + a[1] * b


@cpu_kernel
def chain(x, out, c):
    for i in prange(x.shape[0]):
        u = mix((x[i, 0], x[i, 1]), x[i, 2], c)
        v = mix((u[0], u[1]), u[2], c)
        w = mix((v[1], v[2]), v[0], c)
        out[i, 0], out[i, 1], out[i, 2] = w
'''

_RUN = '''
import json, sys, numpy as np
from numba.core import event
sys.path.insert(0, sys.argv[1])
compiles = []
class Seen(event.Listener):
    def on_start(self, ev): compiles.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev): pass
event.register("numba:compile", Seen())
import helper_kernels as k
x = np.random.default_rng(0).uniform(-2, 2, (7, 3)); out = np.empty_like(x)
k.chain(x, out, 0.75)
sig = k.chain.signatures[0]
asm = k.chain.inspect_asm(sig) if k.chain.stats.cache_hits.get(sig, 0) == 0 else ""
called = [line for line in asm.splitlines() if "3mix" in line and ("call" in line or "movabs" in line)]
print(json.dumps({"out": out.tolist(), "compiles": compiles, "called": called}))
'''


def _reference(x, c):
    def mix(a, b):
        return a[0] * c + a[1], a[1] - b, a[0] + a[1] * b

    rows = []
    for r in x:
        u = mix((r[0], r[1]), r[2])
        v = mix((u[0], u[1]), u[2])
        rows.append(mix((v[1], v[2]), v[0]))
    return np.array(rows)


def test_a_helper_compiles_once_is_inlined_and_is_cached_with_its_kernel(tmp_path):
    (tmp_path / "helper_kernels.py").write_text(_MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBACNN_CACHE="1")
    runs = [json.loads(subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], env=env, capture_output=True,
                                      text=True, check=True).stdout) for _ in range(2)]
    expected = _reference(np.random.default_rng(0).uniform(-2, 2, (7, 3)), 0.75)
    for run in runs:
        np.testing.assert_allclose(run["out"], expected, rtol=1e-12)
    # Three call sites, one compile of the helper (inside the kernel's); its code inlined.
    assert runs[0]["compiles"].count("mix") == 1 and "chain" in runs[0]["compiles"], runs[0]["compiles"]
    assert runs[0]["called"] == [], runs[0]["called"]
    # The next process loads the kernel and compiles nothing, the helper included; the
    # helper has no cache entry of its own (its code is the kernel's).
    assert runs[1]["compiles"] == [], runs[1]["compiles"]
    cached = " ".join(p.name for p in (tmp_path / "cache").rglob("*.nbi"))
    assert "chain" in cached and "mix" not in cached, cached


@cpu_kernel
def _products(a, b, c, d):
    for t in prange(1):
        _blas.gemm(False, False, 2, 2, 3, a, 3, b, 2, 0, c, 2)  # c = a @ b
        _blas.gemm(True, False, 3, 2, 2, a, 3, c, 2, 1, d, 2)  # d += a.T @ c


def test_gemm_compiles_once_for_every_literal_flag_and_is_no_kernel_of_its_own():
    # gemm's callers pass literal flags and betas; each literal is a type of its own, so the
    # linked helper behind it takes plain values (one compile per operand types, not per
    # combination), and warm-up's counts leave it out (it is cached with its kernels).
    rng = np.random.default_rng(1)
    a, b, d0 = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6)
    c, d = np.full(4, np.nan), d0.copy()
    kernel = numba.njit(parallel=True, cache=False)(_products.py_func)
    before = set(_blas._gemm.signatures)
    kernel(a, b, c, d)
    A, B = a.reshape(2, 3), b.reshape(3, 2)
    np.testing.assert_allclose(c.reshape(2, 2), A @ B, rtol=1e-12)  # beta 0: the NaNs c held are ignored
    np.testing.assert_allclose(d.reshape(3, 2), d0.reshape(3, 2) + A.T @ (A @ B), rtol=1e-12)
    new = set(_blas._gemm.signatures) - before
    assert len(new) <= 1 and not any("Literal" in str(t) for sig in _blas._gemm.signatures for t in sig), new
    assert _blas._gemm.signatures  # compiled, in this process or before
    assert not any("._gemm(" in k for k in compiled_kernels())
