"""One kernel interface for every device, and a public face for plugin authors.

Every stem's ``<stem>_cpu`` and ``<stem>_cuda`` modules declare the same ``__all__`` and their
callables have the same signatures (a Numba dispatcher's is its Python function's), so a layer
written once against ``ctx.kernels`` runs on either device. Plugins, the scaffold's output and
the README import only ``numbacnn``, ``numbacnn.kernels`` and ``numbacnn.testing``; importing
numbacnn or its kernel API changes no thread setting.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from numbacnn.layers import BUILTIN

ROOT = Path(__file__).resolve().parents[1]


def _stems() -> dict[str, str]:
    """kernel stem -> the built-in layer named after it: a layer that names another stem's
    kernels (batch_norm1d: kernels = "numbacnn.layers.batch_norm2d") is checked there, once;
    flatten (kernels = None) has none."""
    from numbacnn.layer import kernel_stem
    from numbacnn.registry import get_layer

    found: dict[str, str] = {}
    for name in sorted(BUILTIN):
        stem = kernel_stem(get_layer(name))
        if stem is not None and (stem not in found or stem.rpartition(".")[2] == name):
            found[stem] = name
    return found


STEMS = [pytest.param(stem, id=name)
         for stem, name in _stems().items()]
STEMS += [pytest.param(f"numbacnn.{s}", id=s) for s in ("losses", "optim", "_device")]
STEMS += [pytest.param(f"numbacnn_{p}.{p}", id=p) for p in ("swish", "localconv", "spp")
          if importlib.util.find_spec(f"numbacnn_{p}") is not None]


def _signature(fn: Any) -> str:
    # Parameter names, kinds and defaults: what a caller relies on (annotations are notes).
    sig = inspect.signature(getattr(fn, "py_func", fn))
    return str(sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                           return_annotation=sig.empty))


def _interface(module: Any) -> dict[str, str]:
    """name -> signature of everything in the module's ``__all__``."""
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} declares no __all__ (its kernel interface)"
    found = {}
    for name in names:
        obj = getattr(module, name, None)
        assert callable(obj), f"{module.__name__}.{name} in __all__ is not a callable"
        found[name] = _signature(obj)
    return found


def _undeclared(module: Any) -> list[str]:
    # Public callables of the module's own (kernels, launchers, helpers) are its interface;
    # everything else is private (CUDA kernels proper: _<launcher>_kernel).
    return [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
            and getattr(getattr(v, "py_func", v), "__module__", None) == module.__name__
            and n not in module.__all__]


@pytest.mark.parametrize("stem", STEMS)
def test_cpu_and_cuda_twins_export_one_interface(stem):
    pytest.importorskip("numba.cuda")
    cpu, cuda = (importlib.import_module(f"{stem}_{d}") for d in ("cpu", "cuda"))
    want, got = _interface(cpu), _interface(cuda)
    assert list(got) == list(want), f"{stem}: __all__ differs: cpu {list(want)}, cuda {list(got)}"
    differ = [f"{n}{want[n]} on cpu, {n}{got[n]} on cuda" for n in want if got[n] != want[n]]
    assert not differ, f"{stem}: signatures differ: " + "; ".join(differ)
    for module in (cpu, cuda):
        assert not _undeclared(module), f"{module.__name__}: public but not in __all__: {_undeclared(module)}"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_layers_are_written_once_for_every_device(name):
    from numbacnn.layer import Layer
    from numbacnn.registry import get_layer

    cls = get_layer(name)
    assert cls.forward is not Layer.forward and cls.backward is not Layer.backward
    per_device = [m for m in ("forward_cpu", "backward_cpu", "forward_cuda", "backward_cuda") if hasattr(cls, m)]
    assert not per_device, f"{name} still has {per_device}"


def test_a_layer_without_kernels_says_so():
    # flatten is a view: no kernel modules, and it runs everywhere.
    from numbacnn.registry import get_layer, layer_devices

    cls = get_layer("flatten")
    assert cls.kernels is None and layer_devices(cls) == ["cpu", "cuda"]
    assert importlib.util.find_spec("numbacnn.layers.flatten_cpu") is None


# The private modules: numbacnn._*, and numbacnn.layer / numbacnn.layers (Layer and Ctx are
# numbacnn's own names), as a module path or as a name imported from numbacnn.
PRIVATE = re.compile(r"^[ \t]*(?:from|import)[ \t]+numbacnn\.(?:_\w*|layers?\b)[\w.]*"
                     r"|^[ \t]*from[ \t]+numbacnn[ \t]+import[ \t]+[^\n#]*?\b(?:_\w+|layers?)\b", re.M)


def _private_imports(path: Path, text: str) -> list[str]:
    lines = text.splitlines()
    return [f"{path}: {lines[text.count(chr(10), 0, m.start())].strip()}" for m in PRIVATE.finditer(text)]


def _python_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", markdown, re.S))


def test_the_private_import_pattern_catches_what_it_should():
    bad = ["from numbacnn._jit import cpu_kernel", "from numbacnn.layer import Ctx", "import numbacnn._blas",
           "    from numbacnn.layers.relu import ReLU", "from numbacnn import _jit", "from numbacnn import Layer, layers",
           "import numbacnn.layers"]
    good = ["from numbacnn.kernels import cuda, cuda_kernel", "from numbacnn.testing import check_layer",
            "import numbacnn as nc", "from numbacnn import Ctx, Layer", "from numbacnn_swish.swish import Swish",
            "from numbacnn.layers_extra import x", "from numbacnn import Layer  # see numbacnn.layers"]
    assert [line for line in bad if not PRIVATE.search(line)] == []
    assert [line for line in good if PRIVATE.search(line)] == []


def test_plugins_scaffold_and_readme_import_only_public_modules(tmp_path):
    from numbacnn._scaffold import new_plugin

    found = []
    for path in sorted((ROOT / "plugins").rglob("*")):
        if {"build", "dist"} & set(path.relative_to(ROOT).parts) or ".egg-info" in str(path):
            continue  # what pip's in-tree builds leave behind, not the plugins' sources
        if path.suffix == ".py":
            found += _private_imports(path.relative_to(ROOT), path.read_text())
        elif path.suffix == ".md":
            found += _private_imports(path.relative_to(ROOT), _python_blocks(path.read_text()))
    root, written = new_plugin("tt_public", tmp_path)
    for rel in written:
        if rel.endswith(".py"):
            found += _private_imports(Path("new-plugin") / rel, (root / rel).read_text())
    readme = ROOT / "README.md"
    found += _private_imports(Path("README.md"), _python_blocks(readme.read_text()))
    assert not found, "private numbacnn modules imported:\n" + "\n".join(found)


THREADS = r'''
import json, os, sys
import numba
from threadpoolctl import threadpool_info

def settings():
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMBA_NUM_THREADS")}
    pools = sorted((p["filepath"], p["num_threads"]) for p in threadpool_info())
    return {"numba": numba.get_num_threads(), "env": env, "pools": pools}

before = settings()
import numbacnn, numbacnn.kernels
from numbacnn.kernels import cpu_kernel, gemm  # gemm loads the BLAS it calls
after = settings()
# A library loaded by the import is new, not changed: compare the ones there before.
after["pools"] = [p for p in after["pools"] if p[0] in {q[0] for q in before["pools"]}]
print(json.dumps({"before": before, "after": after, "cuda": "numba.cuda" in sys.modules}))
'''


def test_importing_numbacnn_and_its_kernel_api_changes_no_thread_setting():
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["after"] == out["before"]
    assert out["before"]["pools"], "no BLAS pool seen: the check would pass vacuously"
    assert not out["cuda"], "numbacnn.kernels imported numba.cuda before a kernel asked for it"
