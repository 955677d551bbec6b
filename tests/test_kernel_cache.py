"""Numba's disk cache never serves a kernel compiled against an older helper.

Numba stamps a cached kernel with its own file only, while a kernel that calls a helper from
another file carries that helper's machine code inside it. These tests copy the package to a
temporary folder, fill the cache from fresh processes, edit a helper in another file (of
numbacnn, for a numbacnn kernel and for a plugin's kernel), and expect the new behaviour.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HELPER = textwrap.dedent('''
    """A helper the test edits: kernels in other files inline it."""
    from .._jit import cpu_inline


    @cpu_inline
    def tt_scale(v):
        return v * {factor}
''')
KERNEL = textwrap.dedent('''
    from .._jit import cpu_serial
    from ._tt_helper import tt_scale


    @cpu_serial
    def tt_kernel(x, y):
        for i in range(x.size):
            y[i] = tt_scale(x[i])
''')
# A plugin's kernel that inlines a numbacnn helper (as plugins inline numbacnn's gemm).
PLUGIN_KERNEL = textwrap.dedent('''
    from numbacnn._jit import cpu_serial
    from numbacnn.layers._tt_helper import tt_scale


    @cpu_serial
    def tt_plugin_kernel(x, y):
        for i in range(x.size):
            y[i] = tt_scale(x[i]) + 1.0
''')
RUN = textwrap.dedent('''
    import json
    import numpy as np
    from numbacnn.layers._tt_kernel import tt_kernel
    from ttplug.kern import tt_plugin_kernel

    out = {}
    for kernel in (tt_kernel, tt_plugin_kernel):
        x, y = np.ones(3), np.zeros(3)
        kernel(x, y)
        out[kernel.__name__] = [float(y[0]), sum(kernel.stats.cache_misses.values()),
                                kernel.stats.cache_path]
    print(json.dumps(out))
''')


def _copy_package(dest: Path) -> Path:
    shutil.copytree(ROOT / "numbacnn", dest / "numbacnn", ignore=shutil.ignore_patterns("__pycache__"))
    layers = dest / "numbacnn" / "layers"
    (layers / "_tt_helper.py").write_text(HELPER.format(factor="2.0"))
    (layers / "_tt_kernel.py").write_text(KERNEL)
    (dest / "ttplug").mkdir()
    (dest / "ttplug" / "__init__.py").write_text("")
    (dest / "ttplug" / "kern.py").write_text(PLUGIN_KERNEL)
    return layers / "_tt_helper.py"


def _run(src: Path, cache_dir: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBACNN_CACHE")}
    env["PYTHONPATH"] = str(src)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run([sys.executable, "-c", RUN], cwd=src, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "__pycache__"])
def test_editing_a_helper_in_another_file_recompiles_the_kernels_that_inline_it(tmp_path, where):
    src = tmp_path / "src"
    helper = _copy_package(src)
    cache_dir = tmp_path / "numba-cache" if where == "NUMBA_CACHE_DIR" else None

    first, again = _run(src, cache_dir), _run(src, cache_dir)
    for name, plus in (("tt_kernel", 0.0), ("tt_plugin_kernel", 1.0)):
        assert first[name][:2] == [2.0 + plus, 1], first  # compiled
        assert again[name][:2] == [2.0 + plus, 0], again  # loaded from the cache: caching works
    if cache_dir is not None:  # the cache lives where Numba's own locators put it
        assert all(Path(v[2]).is_relative_to(cache_dir) for v in first.values()), first
    else:
        assert Path(first["tt_kernel"][2]) == src / "numbacnn" / "layers" / "__pycache__", first
        assert Path(first["tt_plugin_kernel"][2]) == src / "ttplug" / "__pycache__", first

    helper.write_text(HELPER.format(factor="3.0"))  # as an upgrade would
    edited = _run(src, cache_dir)
    assert edited["tt_kernel"][:2] == [3.0, 1], f"stale kernel served from the cache: {edited}"
    assert edited["tt_plugin_kernel"][:2] == [4.0, 1], f"stale plugin kernel served from the cache: {edited}"


def test_no_numba_cache_files_are_tracked_in_git():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "ls-files", "--", "*.nbi", "*.nbc"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"git cannot list the checkout: {done.stderr.strip()}")
    tracked = done.stdout.split()
    assert not tracked, ("Numba cache files are tracked (a fresh checkout could load a stale kernel); "
                         f"git rm --cached them: {', '.join(tracked)}")


CUDA_STAMP = textwrap.dedent('''
    import json
    from ttcuda.kern import tt_cuda_kernel

    cache = tt_cuda_kernel._cache  # no GPU needed to see how the kernel would be cached
    print(json.dumps([type(cache._impl.locator).__name__, cache.cache_path,
                      cache._impl.locator.get_source_stamp()[1]]))
''')


def test_cuda_kernels_are_stamped_with_the_files_they_import_from_too(tmp_path):
    if importlib.util.find_spec("numba.cuda") is None:
        pytest.skip("numba-cuda is not installed")
    src = tmp_path / "src"
    (src / "ttcuda").mkdir(parents=True)
    (src / "ttcuda" / "__init__.py").write_text("")
    (src / "ttcuda" / "helper.py").write_text("SCALE = 2.0\n")
    (src / "ttcuda" / "kern.py").write_text(textwrap.dedent('''
        from numbacnn._jit import cuda_kernel
        from .helper import SCALE


        @cuda_kernel
        def tt_cuda_kernel(x):
            x[0] = SCALE
    '''))
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBACNN_CACHE")}
    env.update(PYTHONPATH=os.pathsep.join([str(src), str(ROOT)]), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def stamp():
        done = subprocess.run([sys.executable, "-c", CUDA_STAMP], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.splitlines()[-1])

    locator, path, before = stamp()
    assert locator == "NumbacnnSourcesLocator" and Path(path).is_relative_to(tmp_path / "cache")
    assert stamp()[2] == before
    (src / "ttcuda" / "helper.py").write_text("SCALE = 3.0\n")
    assert stamp()[2] != before
