"""A kernel's helper compiles once per real type signature, never once more for a literal.

Numba compiles a ``cpu_serial`` function called from a kernel for the argument types of the
call: a literal (``0``, ``True``) is a type of its own (``Literal[int](0)``), and a parallel
loop's index is uint64 inside the region but int64 where Numba first types the loop, so each
of those compiles the helper again. im2col's ``_forward_chunk`` compiled 7 times for the five
zoo models (batch 1 and 8, training and inference) until its calls passed ``np.int64(0)``; 1
now, with a residual and without (an empty one, not None). ``numbacnn warmup --dtype float32``:
74.8 -> 65.5 s with linear's chunk bodies fixed the same way. Also here: serial kernels copy by
loops, since a slice assignment from an array compiles Numba's formatted shape-mismatch message.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KERNEL_DECORATORS = {"cpu_kernel", "cpu_serial", "cpu_inline", "cpu_call"}


def _decorators(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Name):
            names.add(target.id)
    return names


def _kernel_functions() -> tuple[dict[Path, ast.Module], set[str]]:
    trees = {p: ast.parse(p.read_text()) for p in ROOT.joinpath("numbacnn").rglob("*.py")}
    serial = {fn.name for tree in trees.values() for fn in ast.walk(tree)
              if isinstance(fn, ast.FunctionDef) and _decorators(fn) & {"cpu_serial", "cpu_call"}}
    return trees, serial


def _offences(trees: dict[Path, ast.Module], serial: set[str]) -> list[str]:
    found = []
    for path, tree in trees.items():
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and _decorators(fn) & KERNEL_DECORATORS):
                continue
            inside = {}  # id(call) -> the prange index names around it
            for loop in ast.walk(fn):
                if (isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
                        and getattr(loop.iter.func, "id", None) == "prange" and isinstance(loop.target, ast.Name)):
                    for call in ast.walk(loop):
                        inside.setdefault(id(call), set()).add(loop.target.id)
            for call in ast.walk(fn):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in serial):
                    continue
                for arg in call.args:
                    literal = isinstance(arg, ast.Constant) or (
                        isinstance(arg, ast.UnaryOp) and isinstance(arg.operand, ast.Constant))
                    index = isinstance(arg, ast.Name) and arg.id in inside.get(id(call), ())
                    if literal or index:
                        what = "a literal" if literal else "the prange index"
                        found.append(f"{path.relative_to(ROOT)}:{call.lineno}: {fn.name} passes {what} "
                                     f"({ast.unparse(arg)}) to {call.func.id}; pass np.int64(...) / np.bool_(...)")
    return found


def test_kernels_pass_no_literal_and_no_raw_prange_index_to_serial_functions():
    trees, serial = _kernel_functions()
    assert {"_forward_chunk", "_columns", "input_tiles"} <= serial  # the scan sees the kernels
    offences = _offences(trees, serial)
    assert not offences, "\n".join(offences)


def test_the_scan_finds_both_kinds_of_offence():
    tree = ast.parse(
        "@cpu_kernel\n"
        "def k(x, T):\n"
        "    helper(x, 0)\n"
        "    for t in prange(T):\n"
        "        helper(x, t)\n"
        "        helper(x, np.int64(t))\n"
        "        other(x, 0)\n"
        "    for t in range(T):\n"
        "        helper(x, t)\n")
    found = _offences({ROOT / "numbacnn" / "fake.py": tree}, {"helper"})
    assert [line.split(": ", 1)[1].split(" (")[0] for line in found] == [
        "k passes a literal", "k passes the prange index"]


_CHILD = """
import json, numpy as np, numbacnn as nc
from numba.core.registry import CPUDispatcher
from numbacnn.layers import conv2d_cpu, linear_cpu
for conv in ((16, 1, 0), (3, 3, 1)):
    g = nc.Graph()
    h = g.relu(g.conv2d(g.input((4, 8, 8)), out_channels=conv[0], kernel_size=conv[1], padding=conv[2]))
    g.output(g.linear(g.flatten(h), out_features=5))
    for n in (1, 2, 8):
        m = nc.Model(g)
        x = np.random.default_rng(0).standard_normal((n, 4, 8, 8)).astype(np.float32)
        m.forward(x)
        m.backward(np.ones_like(m.forward(x, training=True, grad=True)))
g = nc.Graph()  # a residual join at inference: the add runs inside the conv (numbacnn._fold)
x = g.input((16, 8, 8))
r = g.relu(x)
g.output(g.relu(g.add(g.conv2d(x, out_channels=16, kernel_size=1), r)))
for n in (2, 8):
    nc.Model(g).forward(np.random.default_rng(0).standard_normal((n, 16, 8, 8)).astype(np.float32))
w, b = np.ones((16, 4, 1, 1), np.float32), np.zeros(16, np.float32)
for n in (1, 2):  # 2 chunks, whatever the thread count: a batch of 1 split (_forward_split), of 2 not
    x = np.ones((n, 4, 8, 8), np.float32)
    for residual in (None, np.ones((n, 16, 8, 8), np.float32)):
        y = np.empty((n, 16, 8, 8), np.float32)
        conv2d_cpu._im2col_forward(x, w, b, y, None, (1, 1, 1, 1, 1, 1, 1, 0, 0), 2, residual=residual)
        assert (y == 4 + (residual is not None)).all()
found = {}
for mod in (conv2d_cpu, linear_cpu):
    for name, f in vars(mod).items():
        if isinstance(f, CPUDispatcher) and f.signatures:
            found[mod.__name__ + "." + name] = [[str(a) for a in s] for s in f.signatures]
print(json.dumps(found))
"""


def _in_fresh_cache(script: str, tmp_path: Path) -> Any:
    """The JSON a child process prints last, run with an empty Numba cache of its own: every
    kernel compiles there (one loaded from a cache lists no signature and has no IR to read)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBACNN_CACHE")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_chunk_functions_compile_once_per_signature(tmp_path):
    found = _in_fresh_cache(_CHILD, tmp_path)
    chunks = ["numbacnn.layers.conv2d_cpu._forward_chunk", "numbacnn.layers.linear_cpu._forward_chunk",
              "numbacnn.layers.linear_cpu._backward_chunk"]
    assert all(name in found for name in chunks), sorted(found)
    for name, signatures in found.items():
        assert not any("Literal" in a or "uint64" in a for s in signatures for a in s), (name, signatures)
    assert len(found["numbacnn.layers.linear_cpu._forward_chunk"]) == 1
    assert len(found["numbacnn.layers.linear_cpu._backward_chunk"]) == 1
    # One specialisation with a residual and without: an empty residual, not None (each of the
    # three compiled twice before, 2.1 s more each time a model with residual joins first ran).
    for name in ("_forward_chunk", "_forward_batch", "_forward_split"):
        signatures = found["numbacnn.layers.conv2d_cpu." + name]
        assert len(signatures) == 1, (name, signatures)


_SLICE_CHILD = """
import json, numpy as np
from numba import njit
from numbacnn._fold_cpu import fold
from numbacnn.layers._siblings_cpu import _stack
ws = (np.ones((2, 3), np.float32), np.full((4, 3), 2, np.float32))
bs = (np.ones(2, np.float32), np.zeros(0, np.float32))
wcat, bcat = np.zeros((6, 3), np.float32), np.zeros(6, np.float32)
_stack(ws, bs, wcat, bcat)
assert (wcat == np.repeat([[1], [1], [2], [2], [2], [2]], 3, axis=1)).all() and (bcat == [1, 1, 0, 0, 0, 0]).all()
z = np.zeros(0, np.int64)
fold(np.zeros((0, 7), np.int64), z, np.zeros(0), np.zeros(0, np.float32), True, z, np.zeros(0, np.bool_))
@njit
def control(a, b):  # a serial slice assignment from an array: the phrase the check looks for is there
    a[0:2] = b
control(np.zeros(3), np.ones(2))
print(json.dumps({f.__name__: "".join(f.inspect_llvm().values()) for f in (_stack, fold, control)}))
"""

SERIAL = KERNEL_DECORATORS - {"cpu_kernel"}  # the parallel kernels turn slice assignment into parfor loops


def _slice_assignments(trees: dict[Path, ast.Module]) -> list[str]:
    # a serial kernel's subscript assignment with a slice in its target and no constant on the right
    found = []
    for path, tree in trees.items():
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and _decorators(fn) & SERIAL):
                continue
            for node in ast.walk(fn):
                sliced = isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Subscript) and any(isinstance(e, ast.Slice) for e in ast.walk(t.slice))
                    for t in node.targets)
                if sliced and not isinstance(node.value, (ast.Constant, ast.UnaryOp)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {fn.name}: {ast.unparse(node)}")
    return found


def test_serial_kernels_copy_by_loops_not_slice_assignment(tmp_path):
    # In a serial kernel a slice assignment from an array (wcat[o:o + K] = w, of any rank) makes
    # Numba compile the message it raises on a shape mismatch, string formatting and all: _stack
    # took 3.2 s to compile from an empty cache in a fresh process, 0.5 s copying by loops. (A
    # parallel kernel's turns into a parfor loop.) The scan, then the IR of the two kernels that
    # had one, from a fresh cache, beside a control that has one.
    trees, _ = _kernel_functions()
    found = _slice_assignments(trees)
    assert not found, "copy with a loop:\n" + "\n".join(found)
    fake = ast.parse("@cpu_serial\ndef k(a, b, i):\n    a[i:i + 2] = b\n    a[0:2] = 0\n")
    assert len(_slice_assignments({ROOT / "numbacnn" / "fake.py": fake})) == 1  # the scan sees one
    irs = _in_fresh_cache(_SLICE_CHILD, tmp_path)
    assert "cannot assign slice" in irs.pop("control")
    for name, ir in irs.items():
        assert "define" in ir, name  # the IR was read
        assert "cannot assign slice" not in ir, f"{name} compiles Numba's slice-shape message: copy with a loop"
