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
linked_only = [getattr(o.library, "_numbacnn_link_only", False) for o in k.mix.overloads.values()]
print(json.dumps({"out": out.tolist(), "compiles": compiles, "called": called, "linked_only": linked_only}))
'''


def _run(code, *args, env):
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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
    runs = [json.loads(_run(_RUN, str(tmp_path), env=env)) for _ in range(2)]
    expected = _reference(np.random.default_rng(0).uniform(-2, 2, (7, 3)), 0.75)
    for run in runs:
        np.testing.assert_allclose(run["out"], expected, rtol=1e-12)
    # Three call sites, one compile of the helper (inside the kernel's); its code inlined.
    assert runs[0]["compiles"].count("mix") == 1 and "chain" in runs[0]["compiles"], runs[0]["compiles"]
    assert runs[0]["called"] == [], runs[0]["called"]
    assert runs[0]["linked_only"] == [True], runs[0]["linked_only"]  # no machine code of its own
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


_WINOGRAD = '''
import json, re, numpy as np
from numbacnn._jit import LINKED_HELPER
from numbacnn.layers import conv2d_plan, conv2d_winograd_cpu as wc, conv2d_winograd_tiles as tiles
from numbacnn.layers import conv2d_cpu
x = np.random.default_rng(2).standard_normal((2, 8, 8, 8)).astype(np.float32)
w = np.random.default_rng(3).standard_normal((8, 8, 3, 3)).astype(np.float32)
b, y = np.zeros(8, np.float32), np.empty((2, 8, 8, 8), np.float32)
geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)
with conv2d_plan.force_path("winograd"):
    plan = conv2d_cpu.conv2d_plan("c", x.shape, y.shape, geo, False, np.float32)
conv2d_cpu.conv2d_forward(x, w, b, y, plan, tuple(np.empty(s, d or np.float32) for s, d in plan.forward_scratch))
helpers = [name for mod in (wc, tiles) for name, f in vars(mod).items()
           if getattr(getattr(f, "py_func", None), LINKED_HELPER, False)]
# The kernel's code holds its linked copies of the tile routines (their own libraries are
# linked only: what inspect_asm would show of them is unoptimized IR, not what runs).
asm = wc.conv2d_forward_winograd.inspect_asm(wc.conv2d_forward_winograd.signatures[0])
refs = re.findall(r"(?:movabsq\\s+\\$|call\\w*\\s+)(_ZN\\S+)", asm)
defined = [n for n in ("input_tiles", "output_tiles") if re.search(rf"^_ZN\\S*{len(n)}{n}B\\S*:$", asm, re.M)]
left = sorted({h for h in helpers for r in refs if f"{len(h)}{h}B" in r})
print(json.dumps({"helpers": sorted(helpers), "left": left, "defined": defined}))
'''


def test_llvm_inlines_the_winograd_helpers_into_the_kernels_that_call_them(tmp_path):
    # The tile routines call the transforms 16 times a tile, the kernel the output store once a
    # block: a helper LLVM left as a call would cost a call (and an unoptimized tuple return)
    # at each. Compiled in a fresh cache, so that the machine code can be read.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBACNN_CACHE="1")
    found = json.loads(_run(_WINOGRAD, env=env))
    assert {"_store", "_bt", "_at", "ld6", "_st4"} <= set(found["helpers"]), found["helpers"]
    assert found["defined"] == ["input_tiles", "output_tiles"], found["defined"]
    # The input's HWC copy (conv2d_hwc_cpu.to_hwc_rows_any: a whole image, or at batch 1 one
    # padded row, a call) may stay a call: its two orders are past LLVM's inlining budget. Every
    # other helper this kernel calls is inlined. (The backward's copies are not read here.)
    assert set(found["left"]) <= {"to_hwc_rows_any"}, found["left"]
