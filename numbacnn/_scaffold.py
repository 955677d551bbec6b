"""``numbacnn new-plugin NAME``: write a ready-to-install layer plugin package.

The package is laid out like a built-in layer (``NAME.py``, ``NAME_cpu.py``, ``NAME_cuda.py``)
with its entry point in ``pyproject.toml``, tests that run the conformance kit, and a
pytest-benchmark file timing the layer beside NumPy (``numbacnn.testing.benchmark_layer``). The
layer is elementwise (any shape -> same shape) to start from; its kernels and the tests' NumPy
functions raise ``NotImplementedError`` until written, so the conformance tests fail and say
where, and the benchmarks, with nothing to time yet, skip and say so.
"""

from __future__ import annotations

import argparse
import keyword
import re
from pathlib import Path
from string import Template

__all__ = ["new_plugin", "plugin_names", "add_arguments", "cmd_new_plugin"]

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name layer for numbacnn."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["numbacnn>=$numbacnn_version"]

# One entry point per layer: entry name = layer name, value = "module:Class".
[project.entry-points."numbacnn.layers"]
$name = "$pkg.$name:$cls"

[tool.setuptools.packages.find]
include = ["$pkg*"]

[tool.pytest.ini_options]
addopts = "--import-mode=importlib"
pythonpath = ["."]
'''

_INIT = '''\
"""$dist: the $name layer for numbacnn, found through the ``numbacnn.layers`` entry point.

numbacnn imports ``$pkg.$name`` the first time the layer is used; keep this file empty of imports.
"""

__version__ = "0.1.0"
'''

_LAYER = '''\
"""$name: y = f(x), elementwise. Say here what the layer computes, and its gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from numbacnn import Ctx, Layer

Shape = tuple[int, ...]


class $cls(Layer):
    """$cls, elementwise. Any shape -> same shape."""

    name = "$name"

    def __init__(self) -> None:
        # Hyper-parameters are the constructor's (JSON-able) arguments: validate them here
        # and raise ValueError or TypeError.
        pass

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """What ``numbacnn layers --check $name`` runs the conformance kit on."""
        return [{"config": {}, "input_shapes": [(2, 3, 4, 5)]}]

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def init_params(self, input_shapes: list[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    # Written once for every device: ctx.kernels is ${name}_cpu or ${name}_cuda, by the node's
    # device. Allocate only through ctx; flatten with a.reshape(a.size), a view on either device.
    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty_like(x)
        ctx.kernels.${name}_forward(x.reshape(x.size), y.reshape(y.size))
        ctx.save(x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        (x,) = ctx.saved
        gx = ctx.empty_like(x)
        ctx.kernels.${name}_backward_input(x.reshape(x.size), gy.reshape(gy.size), gx.reshape(gx.size))
        return gx
'''

_CPU = '''\
"""$name CPU kernels (flat arrays); ${name}_cuda.py exports the same names and signatures.

Write each as a ``@cpu_kernel`` (njit(parallel=True), from numbacnn.kernels) whose outermost
loop is ``for i in prange(x.size)``, writing into the output array it is given. Keep float32
float32: write constants as ``x.dtype.type(1)``, never as Python floats.
"""

from numbacnn.kernels import cpu_kernel, prange  # noqa: F401  (the kernels you write use them)

__all__ = ["${name}_forward", "${name}_backward_input"]


def ${name}_forward(x, y):
    """y[i] = f(x[i])."""
    raise NotImplementedError("${name}_forward in $pkg/${name}_cpu.py is not written yet")


def ${name}_backward_input(x, gy, gx):
    """gx[i] = gy[i] * f'(x[i])."""
    raise NotImplementedError("${name}_backward_input in $pkg/${name}_cpu.py is not written yet")
'''

_CUDA = '''\
"""$name CUDA kernels (flat arrays): one output element per thread, each launcher right under
its kernel; the names and signatures are ${name}_cpu.py's.

Write each kernel as a private ``@cuda_kernel`` (from numbacnn.kernels), e.g.
``_${name}_forward_kernel``: ``i = cuda.grid(1)``, then ``if i < x.size:`` and the element's
formula; the public launcher under it runs ``kernel[(x.size + THREADS - 1) // THREADS, THREADS](...)``.
"""

from numbacnn.kernels import cuda, cuda_kernel  # noqa: F401  (the kernels you write use them)

__all__ = ["${name}_forward", "${name}_backward_input"]

THREADS = 256


def ${name}_forward(x, y):
    raise NotImplementedError("${name}_forward in $pkg/${name}_cuda.py is not written yet")


def ${name}_backward_input(x, gy, gx):
    raise NotImplementedError("${name}_backward_input in $pkg/${name}_cuda.py is not written yet")
'''

_TEST = '''\
"""$dist: the conformance kit on CPU and (tiny shapes) CUDA."""

import numpy as np
import pytest

from numbacnn.testing import check_layer
from $pkg.$name import $cls


def ${name}_ref(x):
    """The forward in plain NumPy (float64), written independently of the kernels."""
    raise NotImplementedError("write the NumPy reference of $name in tests/test_${name}.py")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7)])
def test_${name}_cpu(shape):
    check_layer($cls(), [shape], ${name}_ref, cuda=False)


def test_${name}_cuda(numbacnn_cuda):
    check_layer($cls(), [(2, 3, 3, 3)], ${name}_ref, cuda=True, threads=False)
'''

_BENCHMARK = '''\
"""$dist: $name timed with pytest-benchmark, beside NumPy in the same group.

    python -m pytest tests/test_${name}_benchmark.py                        # the tables
    python -m pytest tests/test_${name}_benchmark.py --benchmark-autosave   # keep this commit's run
    python -m pytest tests/test_${name}_benchmark.py --benchmark-compare    # against the last one kept
    python -m pytest tests/test_${name}_benchmark.py --benchmark-compare --benchmark-compare-fail=median:10%

benchmark_layer (a fixture of numbacnn's pytest plugin) compiles the kernels and checks that the
layer and its NumPy peer agree before timing either; each shape and mode is one group, so the
table gives their ratio. device="cuda" times the CUDA kernels, synchronised inside the timer.
Until the kernels and the NumPy functions below are written, these tests skip, saying so.
"""

import numpy as np  # noqa: F401  (the NumPy peer you write uses it)
import pytest

from $pkg.$name import $cls

SHAPES = [(16, 64, 32, 32)]  # the input shapes to time, batch first: the ones your models use


def ${name}_numpy(x):
    """The forward as NumPy would compute it in x's dtype: the peer the kernels race.
    (tests/test_${name}.py keeps the float64 reference the conformance kit checks against.)"""
    raise NotImplementedError("write the NumPy forward of $name in tests/test_${name}_benchmark.py")


def ${name}_numpy_backward(gy, x):
    """The input gradient, as NumPy would compute it."""
    raise NotImplementedError("write the NumPy backward of $name in tests/test_${name}_benchmark.py")


@pytest.mark.parametrize("peer", ["numbacnn", "numpy"])
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_${name}_speed(benchmark_layer, shape, mode, peer):
    try:
        benchmark_layer($cls(), [shape], mode=mode, peer=peer, reference=${name}_numpy,
                        reference_backward=${name}_numpy_backward)
    except NotImplementedError as e:
        pytest.skip(f"not written yet: {e}")
'''

_README = '''\
# $dist

The `$name` layer for [numbacnn](https://pypi.org/project/numbacnn/), registered through the
`numbacnn.layers` entry point: once installed, `g.$name(x)` works in any numbacnn graph
without importing this package.

## Write it

1. `$pkg/$name.py`: the layer's hyper-parameters, `output_shape`, `init_params`, and its
   `forward` and `backward`, written once for every device against `ctx.kernels`;
   `examples()` lists the cases `numbacnn layers --check $name` runs.
2. `$pkg/${name}_cpu.py`: the CPU kernels (njit(parallel=True) loops, decorators from
   `numbacnn.kernels`).
3. `$pkg/${name}_cuda.py`: the CUDA kernels, one output element per thread, with the same
   names and signatures as the CPU ones (both modules list them in `__all__`).
4. `tests/test_${name}.py`: the NumPy reference the kernels are checked against.

## Test it

    pip install -e .
    python -m pytest -m "not cuda" tests                         # CPU
    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda tests        # CUDA, in the simulator
    numbacnn layers --check $name                                # the kit on the installed layer

## Time it

`tests/test_${name}_benchmark.py` times the layer's forward and forward+backward against NumPy
(write its two NumPy functions, and put your shapes in `SHAPES`). `--benchmark-skip` leaves it
out of a test run, `--benchmark-disable` runs it once, untimed. To track it over commits:

    python -m pytest tests/test_${name}_benchmark.py --benchmark-autosave    # on each commit
    python -m pytest tests/test_${name}_benchmark.py --benchmark-compare --benchmark-compare-fail=median:10%
'''

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "$pkg/__init__.py": _INIT,
    "$pkg/$name.py": _LAYER,
    "$pkg/${name}_cpu.py": _CPU,
    "$pkg/${name}_cuda.py": _CUDA,
    "tests/test_${name}.py": _TEST,
    "tests/test_${name}_benchmark.py": _BENCHMARK,
}


def plugin_names(name: str) -> dict[str, str]:
    """The names a plugin for layer ``name`` uses: distribution, package, class."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name) or name.endswith("_"):
        raise ValueError(f"layer name {name!r} is not valid: use lowercase letters, digits and '_', "
                         f"starting with a letter (e.g. 'gelu', 'local_conv2d')")
    return {"name": name, "dist": "numbacnn-" + name.replace("_", "-"), "pkg": "numbacnn_" + name,
            "cls": "".join(part.capitalize() for part in name.split("_"))}


def new_plugin(name: str, parent: str | Path = ".") -> tuple[Path, list[str]]:
    """Write the plugin package for layer ``name`` into ``parent``/numbacnn-NAME.

    Returns the package directory and the files written (relative to it). Refuses a name
    that is already registered, and a directory that already exists.
    """
    from . import __version__, registry

    names = plugin_names(name)
    if name in registry.layer_names():
        info = registry.layer_info(name)
        raise ValueError(f"layer '{name}' is already provided by {info['distribution']} {info['version']}; "
                         f"choose another name")
    root = Path(parent) / names["dist"]
    if root.exists():
        raise FileExistsError(f"{root} already exists; remove it or choose another --dir")
    values = {**names, "numbacnn_version": __version__}
    written = []
    for rel, text in _FILES.items():
        path = root / Template(rel).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
        written.append(str(path.relative_to(root)))
    return root, written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the layer name: lowercase letters, digits and '_' (e.g. gelu)")
    p.add_argument("--dir", default=".", help="where to create numbacnn-NAME/ (default: the current directory)")


def cmd_new_plugin(args: argparse.Namespace) -> int:
    root, written = new_plugin(args.name, args.dir)
    print(f"wrote {root}/")
    for rel in written:
        print(f"  {rel}")
    print(f"next: write the kernels and the tests' NumPy functions, then\n"
          f"  pip install -e {root}\n"
          f"  python -m pytest {root / 'tests'}\n"
          f"  numbacnn layers --check {args.name}")
    return 0
