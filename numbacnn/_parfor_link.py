"""Numba's parallel kernels with the LLVM work on each ``prange`` body done once, not four times.

Numba turns a ``prange`` loop into a "gufunc": it compiles the loop body as a function in a code
library of its own, wraps it in a second library (``_GufuncWrapper``) and that in a third
(``parallelgufuncwrapper``), and links all three into the kernel's library. It finalizes each
library on its own, and finalizing means running LLVM's O3 pipeline over the library's module
and everything linked into it, twice (a "cheap" pipeline, then the full one), and generating
machine code for the result. Only the kernel's library ever runs: the others exist to be linked
into it. So each loop body was optimized eight times and turned into machine code four times.

While a numbacnn kernel compiles (a function marked by ``_kernel_cache.mark_kernel``, seen
through Numba's ``numba:compile`` event), the parfor libraries are finalized for linking only:

- the two wrapper libraries and the body's are linked and verified: no module optimization
  (the body's function passes still run), no machine code. Numba takes no address in the
  wrappers; if anything asks, the machine code is made then. Compiling the body makes a
  Python entry point around it, which Numba never calls: it gets a lazy one (below).

The kernel's library links the three, makes the body's linked copy its own (internal: when the
body's library did make machine code, it defined the body strongly and the JIT bound calls
there, to code without the module O3), and optimizes the whole once, as it always did, so the
machine code that runs is as fast. ``numbacnn train`` from an empty cache, compiling in one
process (14 kernels): 25.5 s before, 17.5 s after; the suite's warm rows, alternating runs:
geometric mean 0.99x of the time before (README, Performance).

The same goes for every function compiled *inside* a numbacnn kernel's compile: the serial
chunk functions a kernel calls (``cpu_serial`` ones called from its ``prange`` body), and
Numba's own helpers they pull in. Each was optimized and made into machine code in a library of
its own, then linked into the kernel and optimized again there; now it is linked only, its
Python entry point made on first use (``_lazy_entry``, for the rare call from Python of a
function that a kernel compiled first), and it is not written to the disk cache (its kernel's
cache entry holds its code). Its Python entry's wrapper (the code that unboxes each argument) is
not even lowered then: the first call from Python lowers it into a library of its own that links
the function's (``_deferred_entry``). One process warming conv2d, max_pool2d and network3 lowered
41 such wrappers, 5% of its compile time. One process compiling lenet5's digits training step and an
inference: 22.8 -> 18.6 s; an empty-cache ``numbacnn train`` 14.5 / 14.8 -> 12.8 / 13.0 s
(alternating runs); the step itself as fast (2.47-2.53 against 2.50-2.58 ms).

Optimized once, a loop can come out slower than it did from IR that had already been through
LLVM: conv2d's weight-gradient reduction (``conv2d_hwc_cpu.reduce_partials``, 64 x 256
partials) ran in 209 us against 17 until it summed its partials in flat runs (now 14). The
suite's rows are the check (README, Performance). Making the bodies' machine code again is not
the way back: made without the module O3, a body's code defined the chunks it links,
unoptimized, and kernels compiled in that process bound their calls there (the suite 1.3x
slower).

A library that links a function of ``SLP_MODULES`` (numbacnn._micro's register tile) is optimised
with LLVM's SLP vectoriser on, which Numba leaves off: the tile's sums are tuples of scalars, one
vector register each only once SLP joins them. Functions that are not numbacnn kernels, and are
not compiled inside one, compile exactly as Numba compiles them, and ``NUMBACNN_LINK_ONCE=0``
turns this off for all (and with it the tile: ``numbacnn._micro.ready``). A Numba whose code
libraries lack the internals used here is left alone (``active()`` says whether it is on).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import llvmlite.binding as ll
from llvmlite import ir
from numba import _dynfunc
from numba.core import caching, codegen, config, cpu, event, lowering
from numba.core.compiler_lock import global_compiler_lock
from numba.core.environment import lookup_environment

from ._kernel_cache import MARK

__all__ = ["install", "active", "depth"]

ENV = "NUMBACNN_LINK_ONCE"
_BODY = "__numba_parfor_gufunc_"  # the loop body's library (named after its function)
_WRAPPERS = ("parallelgufuncwrapper",)  # parallel.build_gufunc_kernel's library
_WRAPPER_REPR = "._GufuncWrapper object at "  # wrappers._GufuncWrapper names its library str(self)
_LINKONCE_ODR = ll.Linkage.linkonce_odr  # how Numba marks a function linked in from another library
_NEEDED = ("finalize", "_optimize_final_module", "_finalize_final_module", "_get_module_for_linking",
           "_raise_if_finalized", "_ensure_finalized", "add_ir_module")
# Modules whose functions want LLVM's SLP vectoriser, which Numba leaves off: a library that links
# one of them is optimised with it on (numbacnn._micro's tiles are tuples of scalars, vectors
# only once SLP joins them). Matched in the mangled names, as Numba mangles a module path.
SLP_MODULES = ("numbacnn._micro",)
_SLP_NAMES = tuple("".join(f"{len(p)}{p}" for p in m.split(".")) for m in SLP_MODULES)
_PTR = ir.IntType(8).as_pointer()
_CPYTHON = ir.FunctionType(_PTR, [_PTR, _PTR, _PTR])  # Numba's Python entry: (closure, args, kws) -> result

_state = threading.local()  # depth: how many numbacnn kernel compiles this thread is inside
_installed: list[bool] = []
_scope: list[bool] = []


def _depth() -> int:
    return getattr(_state, "depth", 0)


def depth() -> int:
    """How many numbacnn kernel compiles this thread is inside (0 when none): a cache lookup
    at depth 0 is a kernel's own, not a function it calls."""
    return _depth()


class _KernelScope(event.Listener):
    """Counts the numbacnn kernel compiles in progress on this thread (nested compiles too)."""

    def on_start(self, ev: Any) -> None:
        if _is_kernel(ev):
            _state.depth = _depth() + 1

    def on_end(self, ev: Any) -> None:
        if _is_kernel(ev):
            _state.depth = _depth() - 1


def _is_kernel(ev: Any) -> bool:
    return bool(getattr(getattr(ev.data.get("dispatcher"), "py_func", None), MARK, False))


def _link_only(name: str) -> bool:
    """Whether a library finalized now exists only to be linked into a numbacnn kernel: a
    parfor wrapper or body of a kernel being compiled, or anything compiled inside the compile
    of a numbacnn function that a kernel's compile started (depth 2 and more)."""
    depth = _depth()
    return depth > 1 or (depth > 0 and (name in _WRAPPERS or _WRAPPER_REPR in name or name.startswith(_BODY)))


def _finalize_for_linking(lib: Any) -> None:
    """``finalize`` without the module O3 or machine code: link, verify, mark finalized."""
    codegen.require_global_compiler_lock()
    lib._raise_if_finalized()
    seen = set()
    for library in lib._linking_libraries:
        if library not in seen:
            seen.add(library)
            lib._reload_init.update(library._reload_init)
            lib._final_module.link_in(library._get_module_for_linking(), preserve=True)
    lib._final_module.verify()
    lib._numbacnn_link_only = True
    lib._finalized = True


def _own_bodies(lib: Any) -> None:
    """Make the prange bodies linked into ``lib`` its own (internal linkage), so that its calls
    bind to these optimized copies. Linked in, they are weak (linkonce_odr), and a body's
    library that makes machine code (made without the module O3; now only when something asks
    for it) defines the same symbols strongly: the JIT bound the calls to that code, so a
    kernel ran its unoptimized bodies in the process that compiled it (googlenet_mini's pools
    at batch 256 2-3.7x slower than the same kernels loaded from the cache).
    A library loaded from the cache holds its own copies alone, and runs as before."""
    for fn in lib._final_module.functions:
        if (not fn.is_declaration and _BODY in fn.name and fn.name.startswith("_ZN")
                and fn.linkage == _LINKONCE_ODR):
            fn.linkage = "internal"


def _wants_slp(lib: Any) -> bool:
    """Whether ``lib``'s module holds a function of an SLP module (defined or linked in)."""
    return any(name in fn.name for fn in lib._final_module.functions for name in _SLP_NAMES)


def _optimize(lib: Any, optimize: Any) -> None:
    """Numba's module optimisation of ``lib``, with the SLP vectoriser on where ``_wants_slp``
    (its pass builder reads the flag when called; compiles hold Numba's global lock)."""
    if not _wants_slp(lib):
        optimize(lib)
        return
    codegen.require_global_compiler_lock()  # the flag is process-wide: only one compile at a time
    before = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        optimize(lib)
    finally:
        config.SLP_VECTORIZE = before


def _lazy_entry(context: Any, library: Any, fndesc: Any, env: Any, make: Any) -> Any:
    """The Python entry point of a function whose library is linked only: a two-instruction
    function (``PyObject_Call`` of ``forward``, its arguments passed through) that makes the
    library's machine code on the first call and calls the real entry from then on. Numba
    takes an entry for every function it compiles; for one compiled inside a kernel it is
    almost never called."""
    real: list[Any] = []

    def forward(*args: Any, **kws: Any) -> Any:
        if not real:
            with global_compiler_lock:
                if not real:
                    real.append(make(context, library, fndesc, env))
        return real[0](*args, **kws)

    module = ir.Module(name="numbacnn_lazy_entry")
    fn = ir.Function(module, _CPYTHON, name=f"numbacnn_lazy_{fndesc.llvm_cpython_wrapper_name}")
    builder = ir.IRBuilder(fn.append_basic_block())
    call = ir.Function(module, _CPYTHON, name="PyObject_Call")
    target = ir.Constant(ir.IntType(64), id(forward)).inttoptr(_PTR)
    builder.ret(builder.call(call, [target, fn.args[1], fn.args[2]]))
    entry = context.codegen().create_library(fn.name)
    entry.add_ir_module(module)
    entry._final_module.verify()
    entry._finalize_final_module()  # machine code, without a module pipeline for two instructions
    address = entry.get_pointer_to_function(fn.name)
    doc = f"compiled wrapper for {fndesc.qualname!r} (made on first call)"
    return _dynfunc.make_function(fndesc.lookup_module(), fndesc.qualname.split(".")[-1], doc, address, env,
                                  (library, entry, forward))


def _deferred_entry(context: Any, library: Any, fndesc: Any, env: Any, make: Any) -> Any:
    """The Python entry of ``fndesc``, in ``library``, whose wrapper lowering was put off (a
    linked-only function's, made when first called from Python): the wrapper lowered now into a
    library of its own, which links ``library`` and makes the machine code of both."""
    entry = context.codegen().create_library(library.name)
    entry.add_linking_library(library)
    with context.push_code_library(entry):  # as Numba lowers it: an unboxer may compile a helper into it
        context.create_cpython_wrapper(entry, fndesc, env, None, release_gil=library._numbacnn_entry)
    entry.finalize()
    return make(context, entry, fndesc, env)


def _set_linked_environments(library: Any) -> None:
    """Point the Environment globals of everything linked into ``library`` at their
    Environments, as Numba does for a library it loads from the cache. A linked-only function
    never set its own (its library makes no code): a dynamic exception raised in it, or a print,
    read a null Environment ("Error creating Python tuple from runtime exception arguments")."""
    for gv in library._final_module.global_variables:
        if gv.name.startswith("_ZN08NumbaEnv") and not gv.is_declaration:
            env = lookup_environment(gv.name)
            if env is not None:
                library.codegen.set_env(gv.name, env)


def install() -> None:
    """Wrap Numba's CPU code library once (idempotent); a no-op when ``NUMBACNN_LINK_ONCE=0``
    or when this Numba's code library lacks the internals used here."""
    if not _scope:  # depth() counts whether or not the linking is on (_precompile reads it)
        event.register("numba:compile", _KernelScope())
        _scope.append(True)
    if _installed or os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no"):
        return
    lib_cls = getattr(codegen, "CPUCodeLibrary", None)
    jit_cls = getattr(codegen, "JITCodeLibrary", None)
    if (lib_cls is None or jit_cls is None or not all(hasattr(lib_cls, n) for n in _NEEDED)
            or not hasattr(jit_cls, "get_pointer_to_function") or not hasattr(cpu.CPUContext, "get_executable")
            or not hasattr(caching.Cache, "save_overload")
            or not hasattr(getattr(lowering, "Lower", None), "create_cpython_wrapper")):
        return
    finalize, optimize = lib_cls.finalize, lib_cls._optimize_final_module
    get_pointer = jit_cls.get_pointer_to_function
    get_executable = cpu.CPUContext.get_executable
    save_overload = caching.Cache.save_overload
    create_wrapper = lowering.Lower.create_cpython_wrapper

    def finalize_parfor_once(self: Any) -> None:
        if _link_only(self.name):
            _finalize_for_linking(self)
        else:
            finalize(self)

    def optimize_parfor_once(self: Any) -> None:
        if _depth() > 0:
            _own_bodies(self)
        _optimize(self, optimize)

    def get_pointer_parfor_once(self: Any, name: str) -> int:
        if getattr(self, "_numbacnn_link_only", False):  # rarely asked; if it is, make optimized code
            _optimize(self, optimize)
            self._finalize_final_module()
            self._numbacnn_link_only = False
        return get_pointer(self, name)

    def wrapper_when_called(self: Any, release_gil: bool = False) -> None:
        if _link_only(self.library.name) and not self.genlower:  # lowered on the first call from Python
            self.library._numbacnn_entry = release_gil  # all the wrapper needs beyond fndesc and env
        else:
            create_wrapper(self, release_gil)

    def make_deferred(context: Any, library: Any, fndesc: Any, env: Any) -> Any:
        return _deferred_entry(context, library, fndesc, env, get_executable)

    def get_executable_once(self: Any, library: Any, fndesc: Any, env: Any) -> Any:
        if _depth() > 0:
            library._ensure_finalized()
        make = make_deferred if hasattr(library, "_numbacnn_entry") else get_executable
        if getattr(library, "_numbacnn_link_only", False):
            return _lazy_entry(self, library, fndesc, env, make)
        cfunc = make(self, library, fndesc, env)
        if _depth() > 0:
            _set_linked_environments(library)
        return cfunc

    def save_unless_link_only(self: Any, sig: Any, data: Any) -> None:
        library = getattr(data, "library", None)
        # A linked-only function's code lives in its kernel's entry; a library whose Python entry
        # was put off lacks that entry, and loaded from the cache would have none.
        if not getattr(library, "_numbacnn_link_only", False) and not hasattr(library, "_numbacnn_entry"):
            save_overload(self, sig, data)

    lib_cls.finalize = finalize_parfor_once
    lib_cls._optimize_final_module = optimize_parfor_once
    jit_cls.get_pointer_to_function = get_pointer_parfor_once
    cpu.CPUContext.get_executable = get_executable_once
    caching.Cache.save_overload = save_unless_link_only
    lowering.Lower.create_cpython_wrapper = wrapper_when_called
    _installed.append(True)


def active() -> bool:
    """Whether numbacnn kernels compile their parfor libraries for linking only."""
    return bool(_installed)
