"""numbacnn/_parfor_link.py: a numbacnn kernel's prange bodies are optimized once, inside the
kernel's library, and the libraries Numba links them through make no machine code.

The kernels here are compiled fresh in each test (no disk cache), marked as numbacnn kernels or
not, and checked against NumPy; spies on Numba's code libraries record which path each library
took.
"""

import os
import subprocess
import sys

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from numba import prange
from numba.core import codegen

from numbacnn import _parfor_link
from numbacnn._kernel_cache import mark_kernel


def _affine_rows(x, w, b, out):
    """out[i] = x[i] @ w + b, one row per prange iteration."""
    for i in prange(x.shape[0]):
        for j in range(w.shape[1]):
            acc = b[j]
            for k in range(x.shape[1]):
                acc += x[i, k] * w[k, j]
            out[i, j] = acc


def _sum_abs(x):
    """A prange reduction: sum(|x|)."""
    total = 0.0
    for i in prange(x.size):
        total += abs(x[i])
    return total


def _compile(fn, marked):
    # A fresh copy of the function each time, so nothing comes from an earlier compile.
    copy = type(fn)(fn.__code__, fn.__globals__, fn.__name__)
    return numba.njit(parallel=True, cache=False)(mark_kernel(copy) if marked else copy)


@pytest.fixture
def libraries(monkeypatch):
    """Names of the code libraries finalized for linking only, and of those made into machine code."""
    seen = {"link_only": [], "machine_code": []}
    link_only = _parfor_link._finalize_for_linking
    monkeypatch.setattr(_parfor_link, "_finalize_for_linking",
                        lambda lib: (seen["link_only"].append(lib.name), link_only(lib))[1])
    specific = codegen.JITCodeLibrary._finalize_specific
    monkeypatch.setattr(codegen.JITCodeLibrary, "_finalize_specific",
                        lambda lib: (seen["machine_code"].append(lib.name), specific(lib))[1])
    return seen


def test_active_on_this_numba():
    # If a Numba upgrade renames the internals, this fails rather than compiles slowly unseen.
    assert _parfor_link.active(), f"numba {numba.__version__}: _parfor_link did not install"


def test_marked_kernel_links_wrappers_without_machine_code(libraries):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((37, 13), (13, 5), (5,)))
    out = np.empty((37, 5), np.float32)
    _compile(_affine_rows, marked=True)(x, w, b, out)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)
    wrappers = [n for n in libraries["link_only"]]
    assert "parallelgufuncwrapper" in wrappers
    assert any("_GufuncWrapper" in n for n in wrappers)
    made = libraries["machine_code"]
    assert "parallelgufuncwrapper" not in made and not any("_GufuncWrapper" in n for n in made)
    assert "_affine_rows" in made  # the kernel itself, with everything linked into it


def test_unmarked_function_compiles_as_numba_does(libraries):
    x = np.random.default_rng(1).standard_normal(1001)
    assert _compile(_sum_abs, marked=False)(x) == pytest.approx(np.abs(x).sum(), rel=1e-12)
    assert libraries["link_only"] == []
    assert "parallelgufuncwrapper" in libraries["machine_code"]


def test_marked_reduction_matches_numpy(libraries):
    x = np.random.default_rng(2).standard_normal(100_003)
    x[5] = -np.inf
    assert _compile(_sum_abs, marked=True)(x) == np.inf
    x[5] = 3.0
    assert _compile(_sum_abs, marked=True)(x) == pytest.approx(np.abs(x).sum(), rel=1e-12)
    assert "parallelgufuncwrapper" in libraries["link_only"]


def test_each_parfor_library_skips_module_optimization(monkeypatch):
    # Numba runs two module pipelines (cheap, full) per library it optimizes: for an unmarked
    # kernel, the body's, the two wrappers' and the kernel's; for a marked one, the kernel's.
    pipelines = []
    make = codegen.CPUCodegen._module_pass_manager
    monkeypatch.setattr(codegen.CPUCodegen, "_module_pass_manager",
                        lambda self, **kw: (pipelines.append(kw.get("cost", "full")), make(self, **kw))[1])
    counts = {}
    for marked in (False, True):
        pipelines.clear()
        out = np.empty((3, 2))
        _compile(_affine_rows, marked=marked)(np.ones((3, 4)), np.ones((4, 2)), np.zeros(2), out)
        np.testing.assert_array_equal(out, 4.0)
        counts[marked] = len(pipelines)
    assert counts[False] - counts[True] == 6, counts


def test_a_marked_kernel_calls_its_own_copy_of_each_body(monkeypatch):
    # The body's library makes machine code without the module O3 and defines the body
    # strongly; linked into the kernel, the body is weak (linkonce_odr), so the JIT bound the
    # kernel's calls to the unoptimized code: the process that compiled a kernel ran slower
    # bodies (googlenet_mini's pools 2-3.7x) than any process loading it from the cache. The
    # kernel's library must optimize and call a copy of its own (internal).
    seen = []

    class Spy:
        def __init__(self, mpm):
            self.mpm = mpm

        def run(self, module, *args):
            seen.append({f.name: f.linkage for f in module.functions
                         if not f.is_declaration and f.name.startswith("_ZN") and "__numba_parfor_gufunc_" in f.name})
            return self.mpm.run(module, *args)

    make = codegen.CPUCodegen._module_pass_manager

    def spied(self, **kw):
        mpm, pb = make(self, **kw)
        return (Spy(mpm) if kw.get("cost") == "cheap" else mpm), pb

    monkeypatch.setattr(codegen.CPUCodegen, "_module_pass_manager", spied)
    out = np.empty((3, 2))
    _compile(_affine_rows, marked=True)(np.ones((3, 4)), np.ones((4, 2)), np.zeros(2), out)
    np.testing.assert_array_equal(out, 4.0)
    bodies = [linkage for module in seen for linkage in module.values()]
    assert bodies and all(linkage == llvm.Linkage.internal for linkage in bodies), seen


def test_link_only_library_makes_code_when_asked(libraries, monkeypatch):
    kept = []
    link_only = _parfor_link._finalize_for_linking

    def keep(lib):
        kept.append(lib)
        link_only(lib)

    monkeypatch.setattr(_parfor_link, "_finalize_for_linking", keep)
    out = np.empty((2, 2))
    _compile(_affine_rows, marked=True)(np.ones((2, 2)), np.eye(2), np.ones(2), out)
    wrapper = next(lib for lib in kept if lib.name == "parallelgufuncwrapper")
    name = next(f.name for f in wrapper.get_defined_functions())
    assert wrapper.get_pointer_to_function(name) != 0
    assert "parallelgufuncwrapper" in libraries["machine_code"]


def test_environment_turns_it_off():
    code = "import numbacnn._jit, numbacnn._parfor_link as p; print(p.active())"
    for value, expect in (("0", "False"), ("1", "True")):
        env = dict(os.environ, NUMBACNN_LINK_ONCE=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expect


def _untypable(x):
    for i in prange(x.shape[0]):
        x[i] = "text"  # a string into a float array: a typing error


def test_a_failed_compile_leaves_the_scope():
    with pytest.raises(numba.core.errors.TypingError):
        _compile(_untypable, marked=True)(np.zeros(4))
    assert _parfor_link._depth() == 0


def _scale_row(x, out, i, s):
    """A serial chunk: out[i] = s * x[i]; refuses a negative entry."""
    for j in range(x.shape[1]):
        if x[i, j] < 0:
            raise ValueError("negative entry")
        out[i, j] = x[i, j] * s


def _scale_rows(x, out, s):
    for i in prange(x.shape[0]):
        chunk(x, out, i, s)  # noqa: F821 (the chunk _chunked puts in this copy's globals)


def _chunked():
    """A fresh marked chunk and a fresh marked kernel calling it, neither cached."""
    copy = type(_scale_row)(_scale_row.__code__, _scale_row.__globals__, _scale_row.__name__)
    chunk = numba.njit(cache=False)(mark_kernel(copy))
    kernel = type(_scale_rows)(_scale_rows.__code__, {**_scale_rows.__globals__, "chunk": chunk}, "_scale_rows")
    return chunk, numba.njit(parallel=True, cache=False)(mark_kernel(kernel))


def test_a_function_compiled_inside_a_kernel_is_linked_only(libraries):
    chunk, kernel = _chunked()
    x = np.random.default_rng(3).uniform(0, 1, (9, 7))
    out = np.empty_like(x)
    kernel(x, out, 2.5)
    np.testing.assert_array_equal(out, x * 2.5)
    assert "_scale_row" in libraries["link_only"]
    assert "_scale_row" not in libraries["machine_code"]  # its code is the kernel's
    assert "_scale_rows" in libraries["machine_code"]
    # Nor does the body: a body's machine code (made without the module O3) defined the chunks
    # it links, unoptimized, and a kernel compiled in this process bound its calls there (the
    # suite 1.3x slower when bodies made code and chunks did not).
    assert not any(name.startswith("__numba_parfor_gufunc_") for name in libraries["machine_code"])


def test_a_linked_only_function_still_runs_when_called_from_python(libraries):
    # The Python entry of a function a kernel compiled first makes its machine code on the
    # first call (it used to be made, unused, at every compile); results and errors as ever.
    chunk, kernel = _chunked()
    x = np.random.default_rng(4).uniform(0, 1, (5, 3))
    out = np.zeros_like(x)
    kernel(x, out, 1.0)
    compiled = list(chunk.signatures)  # (x, out, int64 or uint64, float64): prange's index types
    assert "_scale_row" not in libraries["machine_code"]
    out[:] = 0
    chunk(x, out, 2, 3.0)
    assert chunk.signatures == compiled  # the kernel's compile, not a new one
    assert "_scale_row" in libraries["machine_code"]
    np.testing.assert_array_equal(out[2], 3.0 * x[2])
    assert not out[[0, 1, 3, 4]].any()
    chunk(x, out, 4, s=-1.0)
    np.testing.assert_array_equal(out[4], -x[4])
    x[1, 2] = -1.0
    with pytest.raises(ValueError, match="negative entry"):
        chunk(x, out, 1, 1.0)


def test_a_linked_only_function_lowers_its_python_wrapper_only_when_called(monkeypatch):
    # The wrapper that unboxes a function's arguments for Python was lowered (and optimized) for
    # every function a kernel compiled, though none is called from Python: 5% of a warm-up's
    # compile. It is now lowered on the first call from Python, into a library of its own.
    from numba.core import cpu
    lowered = []
    create = cpu.CPUContext.create_cpython_wrapper
    monkeypatch.setattr(cpu.CPUContext, "create_cpython_wrapper",
                        lambda self, lib, fndesc, *a, **k: (lowered.append(fndesc.qualname),
                                                             create(self, lib, fndesc, *a, **k))[1])
    chunk, kernel = _chunked()
    x = np.random.default_rng(5).uniform(0, 1, (6, 4))
    out = np.zeros_like(x)
    kernel(x, out, 2.0)
    np.testing.assert_array_equal(out, 2.0 * x)
    compiled = list(chunk.signatures)
    assert any(name.endswith("_scale_rows") for name in lowered), lowered  # the kernel's own entry
    assert not any(name.endswith("_scale_row") for name in lowered), lowered
    assert not any("__numba_parfor_gufunc_" in name for name in lowered), lowered  # nor its loop body's
    out[:] = 0
    chunk(x, out, 3, 0.5)
    assert chunk.signatures == compiled  # the kernel's compile, not a new one
    assert sum(name.endswith("_scale_row") for name in lowered) == 1, lowered
    np.testing.assert_array_equal(out[3], 0.5 * x[3])
    assert not out[[0, 1, 2, 4, 5]].any()
    chunk(x, out, 0, 4.0)  # the entry made once
    assert sum(name.endswith("_scale_row") for name in lowered) == 1, lowered
    np.testing.assert_array_equal(out[0], 4.0 * x[0])


_CACHED_MODULE = '''
import numpy as np
from numbacnn._jit import cpu_kernel, cpu_serial, prange


@cpu_serial
def scale_row(x, out, i, s):
    for j in range(x.shape[1]):
        out[i, j] = x[i, j] * s


@cpu_kernel
def scale_rows(x, out, s):
    for i in prange(x.shape[0]):
        scale_row(x, out, i, s)
'''

_CACHED_RUN = '''
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import cached_kernels as k
x = np.arange(12.0).reshape(4, 3); out = np.empty_like(x)
k.scale_rows(x, out, 2.0)
assert (out == 2.0 * x).all(), out
print(k.scale_rows.stats.cache_hits.get(k.scale_rows.signatures[0], 0), len(k.scale_row.signatures))
'''


def test_the_kernel_is_cached_with_its_linked_functions_code(tmp_path):
    # A linked-only function is not written to the disk cache (its library has no machine
    # code): the kernel's cache entry holds that code, and a process loading the kernel runs
    # it without compiling the function again.
    (tmp_path / "cached_kernels.py").write_text(_CACHED_MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBACNN_CACHE="1")
    runs = [subprocess.run([sys.executable, "-c", _CACHED_RUN, str(tmp_path)], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs == [["0", "2"], ["1", "0"]], runs  # 2: prange compiles the row function for int64 and uint64
    cached = " ".join(p.name for p in (tmp_path / "cache").rglob("*.nbi"))
    assert "scale_rows" in cached and "scale_row-" not in cached and "scale_row." not in cached, cached


def _checked(x, i):
    if x[i] < 0:
        raise ValueError("negative entry", x[i])  # a dynamic exception: it reads its Environment
    return x[i] * 2.0


def _sum_checked(x):
    s = 0.0
    for i in range(x.size):
        s += checked(x, i)  # noqa: F821 (put in this copy's globals below)
    return s


def test_a_linked_only_function_raises_its_own_exception_inside_a_kernel():
    # Its library makes no code, so Numba never set its Environment: the kernel compiled in this
    # process raised "RuntimeError: Error creating Python tuple from runtime exception
    # arguments" instead of the function's ValueError (a cached kernel was right).
    copy = type(_checked)(_checked.__code__, _checked.__globals__, _checked.__name__)
    checked = numba.njit(cache=False)(mark_kernel(copy))
    outer = type(_sum_checked)(_sum_checked.__code__, {**_sum_checked.__globals__, "checked": checked}, "_sum")
    kernel = numba.njit(cache=False)(mark_kernel(outer))
    assert kernel(np.ones(3)) == 6.0
    with pytest.raises(ValueError) as err:
        kernel(np.array([1.0, -2.0]))
    assert err.value.args == ("negative entry", -2.0)
    # Called from Python, through the entry lowered on that first call, it raises as its own.
    assert checked(np.array([1.5]), 0) == 3.0
    with pytest.raises(ValueError) as err:
        checked(np.array([1.0, -4.0]), 1)
    assert err.value.args == ("negative entry", -4.0)


def test_depth_counts_with_the_linking_off():
    # _precompile reads depth() to tell a kernel's own cache lookup from its helpers'.
    code = ("import numba, numpy as np\nfrom numba.core import event\nfrom numbacnn import _parfor_link as p\n"
            "from numbacnn._kernel_cache import mark_kernel\nseen = []\n"
            "class L(event.Listener):\n    def on_start(self, ev): seen.append(p.depth())\n"
            "    def on_end(self, ev): pass\n"
            "event.register('numba:compile', L())\n"
            "def f(x):\n    return x + 1\n"
            "numba.njit(cache=False)(mark_kernel(f))(1.0)\nprint(p.active(), seen[0], p.depth())")
    env = dict(os.environ, NUMBACNN_LINK_ONCE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1", "0"], out.stdout
