"""The kernel configuration rules: one decorator module, caching on, no import side effects."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DECORATOR = re.compile(r"@(numba\.)?(njit|jit)\b|cuda\.jit\b|numba\.njit\(|\bnjit\(")


def test_no_numba_decorator_outside_the_jit_module():
    offenders = []
    for path in [*ROOT.joinpath("numbacnn").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]:
        if path.name == "_jit.py" or "scaffold" in path.name:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if DECORATOR.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_fastmath_only_as_reassociation():
    # Kernels may opt into reordering sums (REASSOC) or fusing multiply-adds (CONTRACT), never
    # into assuming no NaN or Inf.
    offenders = []
    for path in [*ROOT.joinpath("numbacnn").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]:
        if path.name == "_jit.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "fastmath=" in line and "fastmath=REASSOC" not in line and "fastmath=CONTRACT" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    from numbacnn import _jit

    assert _jit.REASSOC == {"reassoc"}
    assert _jit.CONTRACT == {"contract"}


def _fastmath_flags(modules: list) -> dict[str, object]:
    # The fastmath option of each Numba function the modules define (their own, not imported ones).
    return {f"{module.__name__}.{name}": obj.targetoptions.get("fastmath", False)
            for module in modules for name, obj in vars(module).items()
            if hasattr(obj, "py_func") and isinstance(getattr(obj, "targetoptions", None), dict)
            and obj.py_func.__module__ == module.__name__}


def _fastmath_offenders(modules: list) -> list[str]:
    # Those whose fastmath is anything but off, REASSOC or CONTRACT.
    return [f"{name}: fastmath={flag!r}" for name, flag in _fastmath_flags(modules).items()
            if flag not in (False, {"reassoc"}, {"contract"})]


def test_every_cpu_function_compiles_with_fastmath_off_reassoc_or_contract():
    # The compiled options themselves, not their spelling: a kernel that opted into more (e.g.
    # ``fastmath=CONTRACT | {"nnan"}``, which the line check above lets through) is named.
    import importlib
    import pkgutil
    import types

    import numba

    import numbacnn

    # every module that defines CPU functions (the CLI, ONNX and MPI packages define none)
    skip = ("cuda", "__main__", "numbacnn.cli", "numbacnn.onnx", "numbacnn.distributed")
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(numbacnn.__path__, "numbacnn.")
               if not any(part in m.name for part in skip)]
    assert len(_fastmath_flags(modules)) > 200  # the kernels and their helpers were found
    assert not _fastmath_offenders(modules)
    bad = types.ModuleType("bad_kernels")
    bad.f = numba.njit(fastmath={"contract", "nnan"})(lambda x: x)
    bad.f.py_func.__module__ = "bad_kernels"
    (offender,) = _fastmath_offenders([bad])
    assert offender.startswith("bad_kernels.f: fastmath=") and "nnan" in offender


def test_caching_is_on_by_default_and_fastmath_off():
    from numbacnn import _jit
    from numbacnn.layers import relu_cpu

    assert _jit.CACHE
    assert type(relu_cpu.relu_forward._cache).__name__ != "NullCache"
    assert relu_cpu.relu_forward.targetoptions.get("fastmath", False) is False
    assert relu_cpu.relu_forward.targetoptions.get("parallel") is True


def test_only_numbacnn_functions_drop_the_c_callable_wrapper():
    # numbacnn's own functions compile without Numba's C-callable wrapper, which only a
    # first-class function value (jitted code choosing between two functions) uses; a plugin's
    # functions keep it: without one, such a choice fails at link time and aborts the process.
    import numba
    import numpy as np

    from numba.core.caching import NullCache

    from numbacnn import _jit
    from numbacnn.layers import relu_cpu
    from numbacnn_swish import swish_cpu

    assert relu_cpu.relu_forward.targetoptions.get("no_cfunc_wrapper") is True
    assert "no_cfunc_wrapper" not in swish_cpu.swish_forward.targetoptions

    def pick(flag):
        return np.float64(1.0)

    pick.__module__ = "my_plugin.kernels"
    plugin_serial = _jit.cpu_serial(pick)
    assert "no_cfunc_wrapper" not in plugin_serial.targetoptions
    # Not cached: a module that cannot be imported leaves Numba a cache entry it cannot load back
    # (ModuleNotFoundError '<dynamic>' in the next run of this test in the same tree).
    plugin_serial._cache = NullCache()
    assert plugin_serial(True) == 1.0
    assert isinstance(_jit.cpu_cfunc(numba.float64(numba.float64))(lambda v: v), numba.core.ccallback.CFunc)


def test_import_changes_no_thread_settings_and_loads_no_gpu_stack():
    code = (
        "import numba, sys\n"
        "before = numba.get_num_threads()\n"
        "import numpy as np, numbacnn as nc\n"
        "g = nc.Graph(); g.output(g.relu(g.input((2, 3, 3))))\n"
        "nc.Model(g).forward(np.ones((1, 2, 3, 3), np.float32))\n"
        "assert numba.get_num_threads() == before, (numba.get_num_threads(), before)\n"
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda was imported'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
