"""Numba's disk cache, keyed on every source file a kernel can see rather than its own alone.

Numba stamps a cached kernel with a hash of the file that defines it. A kernel that calls a
helper from another file (``max_pool3d_cpu`` inlines ``_conv_columns.valid``, the Winograd
kernels their tile transforms, a plugin numbacnn's ``gemm``) carries that helper's machine
code, so after the helper's file changes (an upgrade, an edit) Numba would keep serving the
old code. Kernels defined through ``numbacnn._jit``'s decorators are marked, and for them the
locator below stamps the cache with a digest of the kernel's file and of every file it
imports from, transitively, within numbacnn and within the kernel's own top-level package:
a change to any of them invalidates the entry. Where the cache lives is left to Numba's own
locators (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the module, else the per-user
cache), so nothing moves. Each file is read and parsed once per process, when the first
kernel that sees it is defined.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from typing import Any, Callable

__all__ = ["mark_kernel", "install", "source_digest"]

MARK = "__numbacnn_kernel__"
STAMP_VERSION = "numbacnn-sources/1"


def mark_kernel(fn: Callable) -> Callable:
    """Flag ``fn`` as a numbacnn kernel (before Numba sees it) so its cache entries are
    stamped with :func:`source_digest`."""
    setattr(fn, MARK, True)
    return fn


# Import statements, found by pattern rather than by parsing (a tenth of the time): a match
# inside a string or comment only adds a file to the digest, which is safe.
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]+)", re.M)


def _names(text: str) -> tuple[str, ...]:
    text = re.sub(r"#[^\n]*", "", text).replace("\\\n", " ").strip("() \t\n;")
    names = (part.split()[0] for part in text.split(",") if part.split())
    return tuple(n for n in names if re.fullmatch(r"[\w.]+", n))


@functools.lru_cache(maxsize=None)
def _file_facts(path: str) -> tuple[str, tuple[tuple[int, str, tuple[str, ...]], ...]]:
    """The file's sha256 and its imports as (level, module, names): ``import a.b`` gives
    (0, "a.b", ()), ``from ..x import f, g`` gives (2, "x", ("f", "g"))."""
    with open(path, "rb") as f:
        source = f.read()
    text = source.decode("utf-8", "replace")
    imports = [(len(m[1]), m[2], _names(m[3])) for m in _FROM.finditer(text)]
    imports += [(0, name, ()) for m in _IMPORT.finditer(text) for name in _names(m[1])]
    return hashlib.sha256(source).hexdigest(), tuple(imports)


def _module_file(name: str, roots: dict[str, str]) -> str | None:
    """The file of module ``name`` when it lies in one of ``roots`` (top-level name -> file
    of the top-level module or package), found on disk without importing anything."""
    top, *parts = name.split(".")
    root = roots.get(top)
    if root is None:
        return None
    if not parts:
        return root
    folder = os.path.dirname(root)
    if os.path.basename(root) != "__init__.py":
        return None  # a single-file module has no submodules
    for i, part in enumerate(parts):
        sub = os.path.join(folder, part)
        if os.path.isfile(os.path.join(sub, "__init__.py")):
            folder = sub
            if i == len(parts) - 1:
                return os.path.join(sub, "__init__.py")
        elif os.path.isfile(sub + ".py"):
            return sub + ".py"
        else:
            return None
    return None


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def _imported_files(path: str, module: str, roots: dict[str, str]) -> set[str]:
    """Files in ``roots`` whose code ``path`` (module ``module``) can see through its imports:
    ``from .x import f`` sees x's file; ``from . import x`` the submodule x, or the package's
    own ``__init__`` when x is a name defined there."""
    package = module if _is_package(path) else module.rpartition(".")[0]
    found = set()
    for level, name, names in _file_facts(path)[1]:
        if level:
            base = package
            for _ in range(level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{name}" if name else base
        else:
            base = name or ""
        if not names:  # import a.b
            files = [_module_file(base, roots)]
        else:
            subs = [_module_file(f"{base}.{n}", roots) for n in names]
            files = subs if all(subs) else [*subs, _module_file(base, roots)]
        found.update(f for f in files if f)
    return found


def _module_name(path: str, roots: dict[str, str]) -> str:
    for top, root in roots.items():
        if path == root:
            return top
        base = os.path.dirname(root)
        if _is_package(root) and path.startswith(base + os.sep):
            rel = os.path.relpath(path, base)[:-len(".py")].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            return ".".join([top, *rel])
    return ""


@functools.lru_cache(maxsize=None)
def _closure_digest(path: str, module: str, roots: tuple[tuple[str, str], ...]) -> str:
    table = dict(roots)
    seen, todo = set(), [(path, module)]
    while todo:
        file, name = todo.pop()
        if file in seen or not os.path.isfile(file):
            continue
        seen.add(file)
        for dep in _imported_files(file, name, table):
            if dep not in seen:
                todo.append((dep, _module_name(dep, table)))
    h = hashlib.sha256(STAMP_VERSION.encode())
    for file in sorted(seen):
        rel = _module_name(file, table) or os.path.basename(file)
        h.update(f"{rel}\0{_file_facts(file)[0]}\n".encode())
    return h.hexdigest()


def _roots(module: str) -> tuple[tuple[str, str], ...]:
    roots = {}
    for top in ("numbacnn", module.split(".")[0]):
        file = getattr(sys.modules.get(top), "__file__", None)
        if file:
            roots[top] = os.path.abspath(file)
    return tuple(sorted(roots.items()))


def source_digest(py_file: str, module: str) -> str:
    """A digest of ``py_file`` (module ``module``) and every file it imports from, transitively,
    within numbacnn and within its own top-level package."""
    return _closure_digest(os.path.abspath(py_file), module, _roots(module))


class _SourcesLocator:
    """Numba's own locator for the kernel's file, with a source stamp that also covers the
    files the kernel can see. Duck-typed: numba and numba-cuda each have a locator base."""

    _bases: tuple[Any, ...] = ()  # the locator classes Numba would have tried

    def __init__(self, base: Any, py_func: Callable, py_file: str) -> None:
        self._base = base
        self._py_file = py_file  # Numba's warnings name it
        self._module = getattr(py_func, "__module__", "") or ""

    @classmethod
    def from_function(cls, py_func: Callable, py_file: str) -> "_SourcesLocator | None":
        if not getattr(py_func, MARK, False):
            return None
        for base_cls in cls._bases:
            base = base_cls.from_function(py_func, py_file)
            if base is not None:
                return cls(base, py_func, py_file)
        return None

    def ensure_cache_path(self) -> None:
        self._base.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._base.get_cache_path()

    def get_disambiguator(self) -> str:
        return self._base.get_disambiguator()

    def get_source_stamp(self) -> Any:
        try:
            digest = source_digest(self._py_file, self._module)
        except OSError:  # a source not on disk (a zip): Numba's own stamp is all there is
            digest = None
        return self._base.get_source_stamp(), digest


def install(cache_impl: type) -> None:
    """Put a sources locator first in ``cache_impl._locator_classes`` (Numba's ``CacheImpl``,
    or numba-cuda's), once. Unmarked functions fall through to Numba's own locators."""
    classes = cache_impl._locator_classes
    if any(getattr(c, "_numbacnn", False) for c in classes):
        return
    locator = type("NumbacnnSourcesLocator", (_SourcesLocator,), {"_bases": tuple(classes), "_numbacnn": True})
    classes.insert(0, locator)
