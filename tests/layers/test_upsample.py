"""upsample against an interpolation-matrix reference built from PyTorch's C++ rule
(aten/src/ATen/native/UpSample.h) and against PyTorch itself: shapes, every source pixel for
integer and non-integer scales, gradients, NaN-fenced random geometries, the simulator."""

import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import check_layer, run_fenced

Upsample = nc.get_layer("upsample")


def axis_matrix(n, out, factor, mode, align_corners, dtype):
    """(out, n) weights: row o holds what output o takes from each input index along one axis.
    ``factor`` is the scale_factor PyTorch's kernels see (None: given a size, or recomputed)."""
    T = np.dtype(dtype).type
    A = np.zeros((out, n))
    for o in range(out):
        if out == n:  # PyTorch copies an axis it does not resize
            A[o, o] = 1
        elif mode == "nearest":
            scale = np.float32(1 / factor) if factor else np.float32(n) / np.float32(out)
            src = o // 2 if out == 2 * n else min(math.floor(np.float32(o) * scale), n - 1)
            A[o, src] = 1
        else:
            if align_corners:
                real = (T(n - 1) / T(out - 1) if out > 1 else T(0)) * T(o)
            else:
                scale = T(1 / factor) if factor else T(n) / T(out)
                real = max(scale * (T(o) + T(0.5)) - T(0.5), T(0))
            i0 = min(math.floor(real), n - 1)
            lam = float(min(max(real - T(i0), T(0)), T(1)))
            A[o, i0] += 1 - lam
            A[o, min(i0 + 1, n - 1)] += lam
    return A


def matrices(H, W, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
             dtype="float64"):
    if size is not None:
        P, Q = (size, size) if isinstance(size, int) else size
        factors = (None, None)
    else:
        sh, sw = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else scale_factor
        P, Q = math.floor(H * sh), math.floor(W * sw)
        factors = (None, None) if recompute_scale_factor else (sh, sw)
    return (axis_matrix(H, P, factors[0], mode, align_corners, dtype),
            axis_matrix(W, Q, factors[1], mode, align_corners, dtype))


def upsample_ref(x, **kw):
    Ah, Aw = matrices(*x.shape[2:], **kw)
    return np.einsum("ph,nchw,qw->ncpq", Ah, x, Aw)


def upsample_grad_ref(gy, H, W, **kw):
    Ah, Aw = matrices(H, W, **kw)
    return np.einsum("ph,ncpq,qw->nchw", Ah, gy, Aw)


# (hyper-parameters, input shape, expected per-sample output shape)
CONFIGS = [
    (dict(scale_factor=2), (2, 3, 4, 5), (3, 8, 10)),  # ONNX Resize nearest x2
    (dict(scale_factor=3), (1, 2, 3, 2), (2, 9, 6)),
    (dict(scale_factor=1.7), (2, 2, 5, 7), (2, 8, 11)),
    (dict(scale_factor=(0.6, 2.5)), (1, 1, 7, 3), (1, 4, 7)),  # down one axis, up the other
    (dict(size=(4, 9)), (2, 2, 7, 5), (2, 4, 9)),
    (dict(size=5), (1, 3, 5, 2), (3, 5, 5)),  # one axis kept: copied
    (dict(scale_factor=2, mode="bilinear"), (2, 2, 4, 3), (2, 8, 6)),  # ONNX half_pixel
    (dict(scale_factor=2, mode="bilinear", align_corners=True), (1, 2, 3, 5), (2, 6, 10)),  # ONNX align_corners
    (dict(scale_factor=(1.5, 0.7), mode="bilinear"), (2, 1, 5, 7), (1, 7, 4)),
    (dict(size=(3, 8), mode="bilinear"), (1, 2, 7, 8), (2, 3, 8)),
    (dict(size=(1, 4), mode="bilinear", align_corners=True), (2, 1, 5, 3), (1, 1, 4)),  # a single row: scale 0
    (dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True), (1, 2, 6, 7), (2, 7, 9)),
    (dict(scale_factor=2.4, recompute_scale_factor=False), (1, 1, 3, 1), (1, 7, 2)),
]
IDS = [f"{'-'.join(f'{k}{v}' for k, v in kw.items())}-{'x'.join(map(str, s))}" for kw, s, _ in CONFIGS]


@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_upsample_cpu(kw, shape, out):
    layer = Upsample(**kw)
    assert layer.output_shape(shape[1:]) == out
    check_layer(layer, [shape], lambda x: upsample_ref(x, **kw), cuda=False)


def _model(layer, shape, dtype="float32"):
    g = nc.Graph()
    g.output(g.add_layer(layer, g.input(shape[1:]), name="up"))
    return nc.Model(g, dtype=dtype)


def _torch_run(torch, kw, x, gy):
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.Upsample(**kw)(tx)
    ty.backward(torch.tensor(gy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw, shape, out", CONFIGS, ids=IDS)
def test_upsample_matches_torch(kw, shape, out, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(IDS))
    x = rng.standard_normal(shape).astype(dtype)
    model = _model(Upsample(**kw), shape, dtype)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(gy)
    ty, tgx = _torch_run(torch, kw, x, gy)
    assert y.shape == ty.shape == (shape[0], *out) and y.dtype == gx.dtype == np.dtype(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, ty, **tol)
    np.testing.assert_allclose(gx, tgx, **tol)


SCALES = [0.3, 0.5, 0.7, 0.999999, 1.0000001, 1.1, 1 / 3, 1.3, 1.5, 2 / 3, 1.7, 2.0, 2.5, 3.0, 4.1]


@pytest.fixture
def one_thread():
    # Hundreds of tiny launches: a thread pool's wake-ups would cost more than the kernels.
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(threads)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear", "align_corners"])
def test_upsample_reads_the_pixels_torch_reads(mode, dtype, one_thread):
    # Sizes 1..16 against scales where float rounding decides the pixel (1/3, 0.999999, ...),
    # given as scale_factor and as size, both axes at once: every source index as PyTorch's.
    torch = pytest.importorskip("torch")
    kw = dict(mode="bilinear", align_corners=mode == "align_corners") if mode != "nearest" else {}
    rng = np.random.default_rng(0)
    cases = [dict(scale_factor=(s, SCALES[-1 - i])) for i, s in enumerate(SCALES)]
    cases += [dict(size=(int(p), int(q))) for p, q in rng.integers(1, 40, (8, 2))]
    tol = 1e-6 if dtype == "float32" else 1e-13
    for H in (1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16):
        W = 18 - H
        x = rng.permutation(H * W).reshape(1, 1, H, W).astype(dtype)  # each pixel told apart
        for case in cases:
            case = {**case, **kw}
            layer = Upsample(**case)
            try:
                layer.output_shape((1, H, W))
            except nc.ShapeError:
                continue  # an empty output
            model = _model(layer, x.shape, dtype)
            y = model.forward(x, training=True)
            gy = rng.standard_normal(y.shape).astype(dtype)
            gx = model.backward(gy)
            ty, tgx = _torch_run(torch, case, x, gy)
            np.testing.assert_allclose(y, ty, rtol=tol, atol=tol * H * W, err_msg=f"{case} on {H}x{W}")
            np.testing.assert_allclose(gx, tgx, rtol=tol * 10, atol=tol * 10, err_msg=f"{case} on {H}x{W}")


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        mode = str(rng.choice(["nearest", "bilinear"]))
        kw = dict(mode=mode, align_corners=bool(rng.random() < 0.5)) if mode == "bilinear" else {}
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        if rng.random() < 0.35:
            kw["size"] = (int(rng.integers(1, 14)), int(rng.integers(1, 14)))
        else:
            kw["scale_factor"] = (float(rng.choice([0.5, 0.75, 1.0, 1.4, 2.0, 2.6, 3.0])),
                                  float(np.round(rng.uniform(0.4, 3.2), 2)))
            kw["recompute_scale_factor"] = bool(rng.random() < 0.3)
        try:
            Upsample(**kw).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((kw, shape))
    return out


GEOMETRIES = _geometries(30, seed=11)


def test_upsample_random_geometries_cover_the_cases():
    assert sum(kw.get("mode") == "bilinear" and kw["align_corners"] for kw, _ in GEOMETRIES) >= 4
    assert sum(kw.get("mode") == "bilinear" and not kw["align_corners"] for kw, _ in GEOMETRIES) >= 4
    assert sum("size" in kw for kw, _ in GEOMETRIES) >= 4 and any(kw.get("recompute_scale_factor") for kw, _ in GEOMETRIES)
    assert any(min(s[2:]) == 1 for _, s in GEOMETRIES) and any(s[0] == 1 for _, s in GEOMETRIES)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{kw}@{s}" for kw, s in GEOMETRIES])
def test_upsample_random_geometries_fenced(i):
    # Every array inside a NaN-marked margin: a read past one brings NaN, a write past one fails.
    kw, shape = GEOMETRIES[i]
    rng = np.random.default_rng(i)
    layer = Upsample(**kw)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    run = run_fenced(layer, [x], gy)
    np.testing.assert_allclose(run.y, upsample_ref(x, **kw), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.gxs[0], upsample_grad_ref(gy, *shape[2:], **kw), rtol=1e-12, atol=1e-12)


def test_upsample_output_follows_the_input_size():
    # A scale gives floor(size * scale) (in float64, as PyTorch) whatever the input; a size is fixed.
    torch = pytest.importorskip("torch")
    for H, W in [(5, 7), (13, 2), (1, 2), (10, 10)]:
        for kw in (dict(scale_factor=1.1), dict(scale_factor=(2, 0.7)), dict(size=(6, 3))):
            got = Upsample(**kw).output_shape((2, H, W))
            assert got == tuple(torch.nn.Upsample(**kw)(torch.zeros(1, 2, H, W)).shape[1:]), (kw, H, W)


def test_upsample_shape_errors():
    check_layer(Upsample(scale_factor=0.5), [(1, 2, 4, 6)], lambda x: upsample_ref(x, scale_factor=0.5), cuda=False,
                bad_shapes=[([(1, 3, 4)], "expected an input of shape (C, H, W), found (3, 4)"),
                            ([(1, 2, 1, 6)], "input 1x6 scaled by (0.5, 0.5) gives an empty 0x3 output: "
                                             "expected at least 1x1")])
    with pytest.raises(nc.ShapeError, match=r"upsample node 'up': input 3x3 scaled by \(0.2, 0.2\) gives an empty"):
        _model(Upsample(scale_factor=0.2), (1, 1, 3, 3))


@pytest.mark.parametrize("kw, exc, text", [
    (dict(), ValueError, "either size or scale_factor should be defined, found neither"),
    (dict(size=4, scale_factor=2), ValueError, "only one of size or scale_factor should be defined"),
    (dict(size=0), ValueError, "size must be >= 1"),
    (dict(size=(2, 3, 4)), TypeError, "size must be an int or a pair of ints"),
    (dict(scale_factor=0), ValueError, "scale_factor must be positive"),
    (dict(scale_factor=(2, -1)), ValueError, "scale_factor must be positive"),
    (dict(scale_factor=float("inf")), ValueError, "scale_factor must be positive"),
    (dict(scale_factor="2"), TypeError, "scale_factor must be a number or a pair of numbers"),
    (dict(scale_factor=True), TypeError, "scale_factor must be a number or a pair of numbers"),
    (dict(scale_factor=2, mode="bicubic"), ValueError, "mode must be 'nearest' or 'bilinear', found 'bicubic'"),
    (dict(scale_factor=2, align_corners=False), ValueError, "align_corners can only be set with mode='bilinear'"),
    (dict(scale_factor=2, mode="bilinear", align_corners=1), TypeError, "align_corners must be True or False"),
    (dict(size=4, recompute_scale_factor=True), ValueError, "recompute_scale_factor is not meaningful"),
    (dict(scale_factor=2, recompute_scale_factor="yes"), TypeError, "recompute_scale_factor must be True or False"),
])
def test_upsample_bad_hyper_parameters(kw, exc, text):
    with pytest.raises(exc, match=text):
        Upsample(**kw)


def test_upsample_builder_config_and_flops():
    g = nc.Graph()
    h = g.upsample(g.input((3, 5, 4)), scale_factor=2, mode="bilinear", name="up")
    assert h.config == {"size": None, "scale_factor": 2, "mode": "bilinear", "align_corners": None,
                        "recompute_scale_factor": None}
    model = nc.Model(g)
    assert model.output_shape == (3, 10, 8) and model.params == {}
    assert model.flops() == 8 * 3 * 10 * 8
    g = nc.Graph()
    g.output(g.upsample(g.input((3, 5, 4)), size=(7, 7)))
    assert nc.Model(g).flops() == 0  # nearest copies
    again = nc.Model.from_spec(nc.Model(g).to_spec())
    assert again.output_shape == (3, 7, 7)


AXES = [(size, out, mode) for size in (1, 2, 5, 7) for out in (1, 3, 4, 10, 14) for mode in (0, 1, 2)]


def _axis_tables(kernels, size, out, mode, to_device=lambda a: a, to_host=lambda a: a):
    layer = Upsample(size=(out, out), mode="nearest" if mode == 0 else "bilinear",
                     align_corners=None if mode == 0 else mode == 2)
    scale = layer._scales((size, size), (out, out), np.float64)[0]
    index, weight, starts = np.full((2, out), -7), np.full((2, out), np.nan), np.full(size + 1, -7)
    tables = [to_device(a) for a in (index, weight, starts)]
    kernels.upsample_axis(size, scale, mode, *tables)
    return [to_host(a) for a in tables]


@pytest.mark.parametrize("size, out, mode", AXES)
def test_upsample_axis_tables(size, out, mode):
    # The tables the kernels read: index and weight are the reference matrix's nonzeros, and
    # starts[j] the first output whose i0 is >= j (what the CUDA backward's ranges rest on).
    from numbacnn.layers import upsample_cpu

    index, weight, starts = _axis_tables(upsample_cpu, size, out, mode)
    A = axis_matrix(size, out, None, ["nearest", "bilinear", "bilinear"][mode], mode == 2, "float64")
    got = np.zeros_like(A)
    for o in range(out):
        assert index[0, o] <= index[1, o] <= min(index[0, o] + 1, size - 1)
        np.add.at(got[o], index[:, o], weight[:, o] if mode else [1, 0])
    np.testing.assert_allclose(got, A, atol=1e-15)
    assert list(starts) == [next((o for o in range(out) if index[0, o] >= j), out) for j in range(size + 1)]


@pytest.mark.cuda
def test_upsample_axis_tables_cuda():
    from numba import cuda

    from numbacnn.layers import upsample_cpu, upsample_cuda

    for size, out, mode in AXES[::4]:
        want = _axis_tables(upsample_cpu, size, out, mode)
        got = _axis_tables(upsample_cuda, size, out, mode, cuda.to_device, lambda a: a.copy_to_host())
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w, err_msg=f"size {size}, out {out}, mode {mode}")


CUDA_CONFIGS = [
    (dict(scale_factor=2), (1, 2, 3, 2)),
    (dict(scale_factor=(1.7, 0.6)), (2, 1, 4, 5)),
    (dict(scale_factor=2, mode="bilinear"), (1, 2, 3, 3)),
    (dict(scale_factor=(2.5, 0.7), mode="bilinear"), (1, 1, 3, 6)),
    (dict(size=(5, 2), mode="bilinear", align_corners=True), (2, 1, 3, 4)),
    (dict(size=(3, 7), mode="bilinear"), (1, 1, 3, 3)),  # rows copied
]


@pytest.mark.cuda
@pytest.mark.parametrize("kw, shape", CUDA_CONFIGS)
def test_upsample_cuda(kw, shape):
    # The CUDA backward gathers what the CPU scatters: check_layer compares the two.
    check_layer(Upsample(**kw), [shape], lambda x: upsample_ref(x, **kw), cuda=True, threads=False)
