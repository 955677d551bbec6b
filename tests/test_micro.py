"""numbacnn._micro: the register-tiled product against a float64 NumPy reference over random
geometries (whole tiles, remainder rows and columns, row strides, offsets into larger arrays,
NaN and the infinities, nothing written outside the block), its code vectorised (the SLP pass
that _parfor_link turns on for it), and the kernels that take it (conv2d's im2col forward, the
sibling and joined 1x1 convolutions, conv_transpose2d's input gradient) agreeing with their
OpenBLAS selves and with references, the tile forced onto every product they make."""

from __future__ import annotations

import os
import subprocess
import sys

import llvmlite.binding as ll
import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _micro, _parfor_link
from numbacnn._jit import cpu_serial
from numbacnn._micro import micro_gemm


@cpu_serial
def _call(m, n, k, a, lda, b, ldb, c, ldc):
    # from inside another compiled function, as the kernels call it
    micro_gemm(m, n, k, a, lda, b, ldb, c, ldc)


def _check(fn, dtype, m, n, k, rng, special=False) -> None:
    pa, pb, pc = (int(v) for v in rng.integers(0, 4, 3))  # row padding: strides above the used widths
    oa, ob, oc = (int(v) for v in rng.integers(0, 5, 3))  # the blocks start this far into their arrays
    lda, ldb, ldc = k + pa, n + pb, n + pc
    # exact lengths, the last row as long as the block uses (CI runs this under NUMBA_BOUNDSCHECK=1)
    A = rng.standard_normal(oa + max(m - 1, 0) * lda + k).astype(dtype)
    B = rng.standard_normal(ob + max(k - 1, 0) * ldb + n).astype(dtype)
    C = rng.standard_normal(oc + max(m - 1, 0) * ldc + n).astype(dtype)
    if special and m and n and k:  # NaN, inf and -inf; 0 * inf makes NaN, as in NumPy
        A[oa + int(rng.integers(m)) * lda + int(rng.integers(k))] = np.nan
        B[ob + int(rng.integers(k)) * ldb + int(rng.integers(n))] = np.inf
        A[oa + int(rng.integers(m)) * lda + int(rng.integers(k))] = -np.inf
    opa = np.array([A[oa + i * lda:oa + i * lda + k] for i in range(m)]).reshape(m, k)
    opb = np.array([B[ob + j * ldb:ob + j * ldb + n] for j in range(k)]).reshape(k, n)
    with np.errstate(invalid="ignore", over="ignore"):
        want = opa.astype(np.float64) @ opb.astype(np.float64)
    for i in range(m):
        C[oc + i * ldc:oc + i * ldc + n] = np.nan  # what c held is ignored
    keep = C.copy()
    fn(m, n, k, A[oa:], lda, B[ob:], ldb, C[oc:], ldc)
    got = np.array([C[oc + i * ldc:oc + i * ldc + n] for i in range(m)]).reshape(m, n)
    tol = 1e-5 * max(1, np.sqrt(k)) if dtype == np.float32 else 1e-12 * max(1, k)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    mask = np.ones(C.size, bool)  # outside the block: untouched
    for i in range(m):
        mask[oc + i * ldc:oc + i * ldc + n] = False
    np.testing.assert_array_equal(C[mask], keep[mask])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [micro_gemm, _call], ids=["python", "jitted"])
def test_matches_numpy_over_random_geometries(fn, dtype):
    rng = np.random.default_rng(3)
    shapes = [(8, 16, 1), (16, 32, 9), (0, 16, 4), (8, 0, 3), (8, 16, 0), (1, 1, 1), (7, 15, 5), (9, 17, 70)]
    shapes += [tuple(int(v) for v in rng.integers(1, (27, 53, 90))) for _ in range(40)]
    for i, (m, n, k) in enumerate(shapes):
        _check(fn, dtype, m, n, k, rng, special=i % 4 == 3)


def _host_has_fma() -> bool:
    try:
        return bool(ll.get_host_cpu_features().get("fma", False))
    except RuntimeError:
        return False


@pytest.mark.skipif(not _parfor_link.active() or not _host_has_fma(), reason="no SLP pass here, or no FMA")
def test_the_tile_is_vector_code():
    # Without the SLP pass (Numba leaves it off) the tile's tuples run as scalars, 15x slower:
    # its machine code has a vector multiply-add for each of the tile's 8 rows. A fresh process
    # with caching off (Numba shows no code it loaded from its cache).
    # Both the tile compiled alone and a parallel kernel that links it (where _parfor_link finds
    # the tile's functions among the kernel's linked ones).
    code = """
import numpy as np
from numbacnn._jit import cpu_kernel, prange
from numbacnn._micro import micro_gemm

@cpu_kernel
def par(a, b, c, T):
    for t in prange(T):
        micro_gemm(8, 16, 4, a, 4, b, 16, c[t], 16)

a, c = np.ones(64, np.float32), np.ones((2, 128), np.float32)
micro_gemm(8, 16, 4, a, 4, a, 16, c[0], 16)
par(a, a, c, 2)
for f in (micro_gemm, par):
    asm = f.inspect_asm(f.signatures[0])
    print(sum("vfmadd" in l and ("ymm" in l or "zmm" in l) for l in asm.splitlines()))
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_BOUNDSCHECK"}  # the code that runs
    env["NUMBACNN_CACHE"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    alone, linked = (int(v) for v in out.stdout.split()[-2:])
    assert alone >= _micro.ROWS and linked >= _micro.ROWS


def test_fits_where_measured(monkeypatch):
    monkeypatch.setattr(_micro, "MICRO", True)
    assert _micro.micro_fits(np.float32, 64, 64, 256)
    assert not _micro.micro_fits(np.float64, 64, 64, 256)  # float64 keeps BLAS (exact checks)
    assert not _micro.micro_fits(np.float32, 4, 64, 256)  # under a tile's rows
    assert not _micro.micro_fits(np.float32, 64, 1024, 256)  # 32x32 planes: lost
    assert not _micro.micro_fits(np.float32, 16, 256, 32)  # short products: lost
    assert not _micro.micro_fits(np.float32, 64, 49, 256)  # 7x7: a column past the tiles, scalar
    monkeypatch.setattr(_micro, "MICRO", False)
    assert not _micro.micro_fits(np.float32, 64, 64, 256)


@pytest.fixture
def tile_everywhere(monkeypatch):
    """Every float32 product the kernels make through the tile, whatever its shape; yields the
    decisions made by each module that asked ("conv2d_cpu", "_joined_cpu", ...), so that a test
    can check that the kernels it names took the tile (not merely that some kernel did)."""
    from numbacnn.layers import _joined_cpu, _siblings_cpu, conv2d_cpu, conv_transpose2d_cpu

    taken: dict[str, list[bool]] = {}

    def asked_by(name):
        def always(dtype, rows, columns, inner):
            taken.setdefault(name, []).append(np.dtype(dtype) == np.float32)
            return taken[name][-1]
        return always

    for module in (conv2d_cpu, _siblings_cpu, _joined_cpu, conv_transpose2d_cpu):
        monkeypatch.setattr(module, "micro_fits", asked_by(module.__name__.rsplit(".", 1)[-1]))
    return taken


def _conv_ref(x, w, b, stride, pad):
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    K, _, R, S = w.shape
    P, Q = (x.shape[2] - R) // stride + 1, (x.shape[3] - S) // stride + 1
    y = np.zeros((x.shape[0], K, P, Q))
    for r in range(R):
        for s in range(S):
            y += np.einsum("nchw,kc->nkhw", x[:, :, r:r + stride * P:stride, s:s + stride * Q:stride], w[:, :, r, s])
    return y + b[None, :, None, None]


@pytest.mark.parametrize("case", [(3, 72, 20, 7, 1, 1, 0), (2, 9, 12, 11, 3, 2, 1), (5, 16, 33, 5, 3, 1, 1),
                                  (2, 40, 24, 8, 1, 1, 0), (4, 64, 16, 4, 3, 1, 1)])
def test_conv2d_im2col_forward_through_the_tile(case, tile_everywhere):
    from numbacnn.layers import conv2d_cpu

    N, C, K, H, k, stride, pad = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    g = nc.Graph()
    g.output(g.conv2d(g.input((C, H, H)), out_channels=K, kernel_size=k, stride=stride, padding=pad, name="c"))
    model = nc.Model(g, seed=0)
    model.params["c.weight"][...] = w
    model.params["c.bias"][...] = b
    with conv2d_cpu.force_path("im2col"):
        y = model.forward(x)
    want = _conv_ref(x, w, b, stride, pad)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    assert np.isnan(y[0]).any() and not np.isnan(y[1:]).any()
    assert any(tile_everywhere["conv2d_cpu"])


def test_joined_and_siblings_through_the_tile(tile_everywhere, monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))  # their tests, run with the tile on
    import test_joined
    import test_siblings

    for stride, bn, bias, relu in [(1, "ab", False, True), (2, "", True, False), (2, "b", True, True)]:
        test_joined.test_joined_match_the_unjoined_model_and_the_reference("float32", stride, bn, bias, relu,
                                                                           monkeypatch)
    test_siblings.test_siblings_match_the_unfused_model_and_the_reference("float32", monkeypatch)
    # each fused kernel's own products took the tile (the plain models' conv2d also asks)
    assert any(tile_everywhere.get("_joined_cpu", [])) and any(tile_everywhere.get("_siblings_cpu", []))


def test_conv_transpose2d_input_gradient_through_the_tile(tile_everywhere):
    from numbacnn.layers import conv_transpose2d_cpu as ct

    rng = np.random.default_rng(5)
    N, C, H, W, K, k, s, p = 3, 12, 5, 6, 7, 4, 2, 1
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((C, K, k, k)).astype(np.float32)
    P, Q = (H - 1) * s - 2 * p + k, (W - 1) * s - 2 * p + k
    gy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
    gy[1, 2, 3, 4] = np.inf
    geo = (1, k, k, s, s, 1, 1, p, p)
    sc = ct.conv_transpose2d_scratch(x.shape, (N, K, P, Q), geo)
    col, part, phase = (np.empty(sc[n], np.float32) for n in ("col", "part", "phase"))
    gw, gb, gx = np.zeros_like(w), np.zeros(K, np.float32), np.full_like(x, np.nan)
    ct.conv_transpose2d_backward(x, w, gy, gw, gb, gx, col, phase, part, geo)
    # the input gradient is conv2d(gy, w) at the stride, w read (C, K, k, k) as conv2d's (K=C out)
    want = _conv_ref(gy, w, np.zeros(C), s, p)[:, :, :H, :W]
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-4)
    assert np.isinf(gx[1]).any() or np.isnan(gx[1]).any()
    assert np.isfinite(gx[0]).all() and np.isfinite(gx[2]).all()
    assert tile_everywhere["conv_transpose2d_cpu"] == [True]


def test_the_joined_kernel_keeps_its_tile_flags_bools():
    # The joined kernel's per-member flags were overwritten by its scale values (a1, m1 = ...):
    # Numba typed them float, and every sample after a chunk's first took the tile, float64 and
    # hosts without it included. Its product must be compiled for a bool flag only: a fresh
    # process, caching off (a kernel loaded from the cache compiles none of its functions).
    code = """
import numpy as np, numbacnn as nc
from numba import types
from numbacnn.layers import _joined_cpu
for dtype in ("float32", "float64"):
    g = nc.Graph()
    x1, x2 = g.input((20, 4, 4), name="x1"), g.input((24, 8, 8), name="x2")
    a = g.batch_norm2d(g.conv2d(x1, out_channels=16, kernel_size=1, bias=False, name="a"), name="bna")
    b = g.conv2d(x2, out_channels=16, kernel_size=1, stride=2, name="b")
    g.output(g.relu(g.add(a, b)))
    m = nc.Model(g, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    m.forward(rng.normal(size=(8, 20, 4, 4)).astype(dtype), rng.normal(size=(8, 24, 8, 8)).astype(dtype))
print([str(sig[-1]) for sig in _joined_cpu._product.signatures])
"""
    env = {**os.environ, "NUMBACNN_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    kinds = out.stdout.split("[")[-1]
    assert "bool" in kinds and "float" not in kinds, out.stdout
