"""Inference's fusions (numbacnn._fold): conv + relu and add + relu (``relu_pairs``), and a
residual join's add (+ relu) run inside the conv behind one of its inputs (``add_pairs``).
Each fused model against the same model unfused (NUMBACNN_FUSE_RELU=0) bit for bit on every
CPU conv2d path, with and without bias and batch norm, for two- and three-input adds, NaN and
the infinities included, and against a float64 NumPy reference; what is and is not fused;
training and gradient passes untouched; the CUDA twins take the same arguments."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _fold
from numbacnn.layers.conv2d_plan import force_path


def _model(graph: nc.Graph, dtype: str, fuse: bool, monkeypatch: pytest.MonkeyPatch, seed: int = 5) -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
    model = nc.Model(graph, seed=seed, dtype=dtype)
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    for key, value in model.buffers.items():  # batch-norm statistics away from 0/1
        rng = np.random.default_rng(len(key))
        value[...] = rng.uniform(0.3, 3.0, value.shape) if key.endswith("var") else rng.normal(0, 0.5, value.shape)
    return model


def _fused(model: nc.Model) -> list[str]:
    """The relu nodes whose inference forward is skipped (their conv applies them)."""
    ex = model._executor
    return [name for (_, _, layer, name), f in zip(ex._steps, ex._inference) if layer == "relu" and f is _fold.skip]


def _conv_relu(channels: int, out: int, kernel: int, bias: bool, bn: bool) -> nc.Graph:
    g = nc.Graph()
    x = g.input((channels, 9, 7))
    h = g.conv2d(x, out_channels=out, kernel_size=kernel, padding=kernel // 2, bias=bias, name="c")
    if bn:
        h = g.batch_norm2d(h, name="bn")
    g.output(g.relu(h, name="r"))
    return g


def _reference(model: nc.Model, x: np.ndarray, bn: bool, relu: bool = True, residual: bool = False) -> np.ndarray:
    """(relu of) conv2d(x) (+ bias) (then batch norm from running statistics) (+ x itself: a
    residual join on the identity) in float64, by loops over the kernel taps (written here,
    independent of the kernels under test)."""
    w = model.params["c.weight"].astype(np.float64)
    K, C, R, S = w.shape  # C: input channels per group
    p = R // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    N, _, H, W = x.shape
    G = x.shape[1] // C
    Kg = K // G
    y = np.zeros((N, K, H, W))
    for g in range(G):
        for r in range(R):
            for s in range(S):
                y[:, g * Kg:(g + 1) * Kg] += np.einsum("nchw,kc->nkhw", xp[:, g * C:(g + 1) * C, r:r + H, s:s + W],
                                                       w[g * Kg:(g + 1) * Kg, :, r, s])
    if "c.bias" in model.params:
        y += model.params["c.bias"].astype(np.float64)[None, :, None, None]
    if bn:
        m, v = model.buffers["bn.running_mean"], model.buffers["bn.running_var"]
        g, b = model.params["bn.weight"], model.params["bn.bias"]
        y = (y - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5) * g[None, :, None, None] \
            + b[None, :, None, None]
    if residual:
        y = y + x.astype(np.float64)
    return np.maximum(y, 0) if relu else y


def _fused_adds(model: nc.Model) -> list[tuple[str, str]]:
    """(conv, add) node names of every add that runs inside a conv at inference."""
    ex = model._executor
    names = [name for _, _, _, name in ex._steps]
    return [(names[j], names[a]) for j, a, _ in
            _fold.add_pairs(ex._steps, ex._readers, ex._keep, ex._first, ex._folds, ex.device)
            if ex._inference[a] is _fold.skip]


def _block(channels: int, kernel: int, bias: bool, bn: bool, relu: bool, residual_first: bool,
           size: tuple[int, int] = (9, 7), groups: int = 1) -> nc.Graph:
    # x -> conv "c" (-> batch norm) ; add(that, x) (-> relu): a residual join on the identity.
    g = nc.Graph()
    x = g.input((channels, *size))
    h = g.conv2d(x, out_channels=channels, kernel_size=kernel, padding=kernel // 2, bias=bias, groups=groups,
                 name="c")
    if bn:
        h = g.batch_norm2d(h, name="bn")
    y = g.add(x, h, name="a") if residual_first else g.add(h, x, name="a")
    g.output(g.relu(y, name="r") if relu else y)
    return g


# (path, channels, kernel): im2col (few channels), pixel-major, Winograd F(4x4, 3x3) and
# F(4x4, 5x5) (the relu as each output is stored, the residual a pass after), a 1x1 conv (x is
# its own column matrix), shifted taps (conv2d_shift_cpu: 5x5 and 3x3 rows of taps).
PATHS = [("im2col", 3, 3), ("pixel", 6, 3), ("winograd", 16, 3), ("winograd", 16, 5), ("im2col", 5, 1), ("shift", 3, 5),
         ("shift", 2, 3)]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("path,channels,kernel", PATHS)
def test_fused_is_relu_of_the_conv_bit_for_bit(path, channels, kernel, bias, bn, monkeypatch):
    graph = _conv_relu(channels, 16, kernel, bias, bn)
    fused, plain = _model(graph, "float32", True, monkeypatch), _model(graph, "float32", False, monkeypatch)
    assert _fused(fused) == ["r"] and _fused(plain) == []
    _against_unfused(fused, plain, path, channels, kernel, bn, relu=True, residual=False)


def _against_unfused(fused: nc.Model, plain: nc.Model, path: str, channels: int, kernel: int, bn: bool,
                     relu: bool, residual: bool) -> None:
    """The fused model's inference equals the unfused one's bit for bit, on finite data and
    with NaN and -inf in sample 0 (NaN stays NaN as torch.relu keeps it, an infinity spreads;
    samples 1 and 2 as before), and the float64 reference within float32 rounding."""
    rng = np.random.default_rng(kernel + channels)
    x = rng.normal(size=(3, channels, 9, 7)).astype(np.float32)
    with force_path(path):
        y0 = plain(x)
        y = fused(x)
        np.testing.assert_array_equal(y.view(np.uint32), y0.view(np.uint32))
        if relu:
            assert (y == 0).any() and (y > 0).any()  # both sides of the relu are exercised
        np.testing.assert_allclose(y, _reference(plain, x, bn, relu, residual), rtol=1e-4, atol=1e-4)
        x[0, 0, 4, 3], x[0, -1, 0, 0] = np.nan, -np.inf
        y0, y = plain(x), fused(x)
        np.testing.assert_array_equal(y.view(np.uint32), y0.view(np.uint32))
        assert np.isnan(y[0]).any()
        np.testing.assert_allclose(y[1:], _reference(plain, x[1:], bn, relu, residual), rtol=1e-4, atol=1e-4)


# conv + batch norm + relu; the same with the residual add between (x + bn(conv(x)), then relu)
GRAPHS = {"relu": lambda: _conv_relu(6, 8, 3, True, True), "add": lambda: _block(6, 3, True, True, True, False)}


@pytest.mark.parametrize("kind", GRAPHS)
def test_float64_and_the_replay(kind, monkeypatch):
    graph = GRAPHS[kind]()
    fused, plain = _model(graph, "float64", True, monkeypatch), _model(graph, "float64", False, monkeypatch)
    assert (_fused(fused) if kind == "relu" else _fused_adds(fused)) == (["r"] if kind == "relu" else [("c", "a")])
    x = np.random.default_rng(3).normal(size=(2, 6, 9, 7))
    y = fused(x)
    assert np.array_equal(y, plain(x)) and np.array_equal(fused(x), y)  # the second call replays
    np.testing.assert_allclose(y, _reference(plain, x, True, residual=kind == "add"), rtol=1e-12, atol=1e-12)


def _what_is_fused(monkeypatch) -> tuple[nc.Model, nc.Model]:
    """A graph with fusable and unfusable relus, its model fused and plain; the fused checked."""
    g = nc.Graph()
    x = g.input((4, 6, 6))
    c1 = g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="c1")
    r1 = g.relu(c1, name="r1")  # c1 has a second reader: not fused
    c2 = g.conv2d(r1, out_channels=4, kernel_size=1, name="c2")
    r2 = g.relu(g.batch_norm2d(c2, name="bn2"), name="r2")  # through a folded batch norm: fused
    c3 = g.conv2d(r2, out_channels=4, kernel_size=1, name="c3")
    b3 = g.batch_norm2d(c3, name="bn3")
    r3 = g.relu(b3, name="r3")  # bn3 is also a graph output: not fused
    r4 = g.relu(g.relu(x, name="rx"), name="r4")  # no conv before either
    c5 = g.conv2d(r4, out_channels=4, kernel_size=1, name="c5")
    r5 = g.relu(c5, name="r5")  # fused: r5 itself may be a graph output
    g.output(g.add(r3, c1), b3, r5)
    model = _model(g, "float32", True, monkeypatch)
    assert _fused(model) == ["r2", "r5"]
    plain = _model(g, "float32", False, monkeypatch)
    xb = np.random.default_rng(6).normal(size=(2, 4, 6, 6)).astype(np.float32)
    for a, b in zip(model(xb), plain(xb)):
        np.testing.assert_array_equal(a, b)
    return model, plain


def test_what_is_fused(monkeypatch):
    _what_is_fused(monkeypatch)


def test_the_replay_calls_no_fused_step(monkeypatch):
    # _what_is_fused's graph: folded batch norms and fused relus pass their input on, so
    # the replay (from the second call) leaves them out; their readers and the outputs they
    # are (bn3, r5) read what they would have passed on.
    model, plain = _what_is_fused(monkeypatch)
    ex = model._executor
    xb = np.random.default_rng(7).normal(size=(3, 4, 6, 6)).astype(np.float32)
    want = plain(xb)
    for _ in range(2):
        for a, b in zip(model(xb), want):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    (plan,) = [p for p in ex.thread_pass().plans.values() if p.batch == 3]
    skipped = [k for k, f in enumerate(ex._inference) if f is _fold.skip]
    assert {ex._steps[k][3] for k in skipped} >= {"bn2", "r2", "bn3", "r5"}
    assert [call[-1] for call in plan.calls] == [k for k in range(len(ex._steps)) if k not in skipped]


@pytest.mark.parametrize("kind", GRAPHS)
def test_training_and_gradient_passes_run_unfused(kind, monkeypatch):
    graph = GRAPHS[kind]()
    fused, plain = _model(graph, "float64", True, monkeypatch), _model(graph, "float64", False, monkeypatch)
    x = np.random.default_rng(8).normal(size=(2, 6, 9, 7))
    for kw in ({"training": True}, {"training": False, "grad": True}):
        y = fused(x, **kw)
        assert np.array_equal(y, plain(x, **kw))
        gy = np.random.default_rng(9).normal(size=y.shape)
        assert np.array_equal(fused.backward(gy), plain.backward(gy))
        for k in fused.grads:
            assert np.array_equal(fused.grads[k], plain.grads[k])


def test_add_relu_residual_joins(monkeypatch):
    g = nc.Graph()
    x = g.input((3, 9, 7))
    c = g.conv2d(x, out_channels=3, kernel_size=3, padding=1, name="c")  # two readers: stays unfused
    r = g.relu(g.add(c, x, name="a"), name="r")
    g.output(g.relu(g.add(r, x, c, name="a3"), name="r3"))  # three inputs: the last sum fused
    fused, plain = _model(g, "float32", True, monkeypatch), _model(g, "float32", False, monkeypatch)
    assert _fused(fused) == ["r", "r3"] and _fused(plain) == []
    xb = np.random.default_rng(11).normal(size=(2, 3, 9, 7)).astype(np.float32)
    conv = _reference(plain, xb, False, relu=False)
    want = np.maximum(np.maximum(conv + xb, 0) + xb + conv, 0)
    y = fused(xb)
    np.testing.assert_array_equal(y.view(np.uint32), plain(xb).view(np.uint32))
    assert (y == 0).any() and (y > 0).any()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    xb[0, 1, 2, 3], xb[1, 0, 0, 0] = np.nan, np.inf
    y = fused(xb)
    np.testing.assert_array_equal(y.view(np.uint32), plain(xb).view(np.uint32))
    assert np.isnan(y[0]).any() and not np.isfinite(y[1]).all()


# ---- a residual join's add (+ relu) inside the conv (numbacnn._fold.add_pairs) ----


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("bias,bn", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("path,channels,kernel", PATHS)
def test_fused_add_is_the_add_of_the_conv_bit_for_bit(path, channels, kernel, bias, bn, relu, monkeypatch):
    graph = _block(channels, kernel, bias, bn, relu, residual_first=kernel == 3)
    fused, plain = _model(graph, "float32", True, monkeypatch), _model(graph, "float32", False, monkeypatch)
    assert _fused_adds(fused) == [("c", "a")] and _fused_adds(plain) == []
    # the infinity in x's last channel also reaches the output through the residual alone
    _against_unfused(fused, plain, path, channels, kernel, bn, relu, residual=True)


@pytest.mark.parametrize("case", ["split", "groups"])
def test_fused_add_on_the_batch_1_split_and_on_groups(case, monkeypatch):
    # Batch 1 below the thread count, >= 2^20 multiply-adds: the im2col plan splits the
    # sample's output columns over the threads (_forward_split), each adding its own columns'
    # residual. Groups: the residual is viewed per group like y.
    from numbacnn._threads import batch_chunks
    from numbacnn.layers import conv2d_cpu

    if case == "split":  # 64x32x32: at PARALLEL_MIN, so the pass keeps its threads
        if batch_chunks(2) < 2:
            pytest.skip("one thread: nothing to split over")
        graph, shape = _block(64, 1, True, False, True, False, size=(32, 32)), (1, 64, 32, 32)
    else:
        graph, shape = _block(8, 3, True, False, True, True, groups=2), (3, 8, 9, 7)
    fused, plain = _model(graph, "float32", True, monkeypatch), _model(graph, "float32", False, monkeypatch)
    assert _fused_adds(fused) == [("c", "a")]
    split, calls = conv2d_cpu._forward_split, []
    monkeypatch.setattr(conv2d_cpu, "_forward_split", lambda *a: (calls.append(a[7].shape[0] > 0), split(*a))[1])
    x = np.random.default_rng(21).normal(size=shape).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    y = fused(x)
    assert calls == ([True] if case == "split" else [])  # the split kernel ran, with the residual
    np.testing.assert_array_equal(y.view(np.uint32), plain(x).view(np.uint32))
    x[0, 1, 2, 3] = 0.0
    np.testing.assert_allclose(fused(x), _reference(plain, x, False, True, residual=True), rtol=1e-4, atol=1e-4)


def test_a_bottleneck_block_with_a_projection(monkeypatch):
    # Both inputs of the join are conv + batch norm: the later conv takes the add, the other's
    # output is its residual; inference keeps the block's answer and its memory plan holds.
    g = nc.Graph()
    x = g.input((8, 8, 8))
    nc.blocks.bottleneck(g, x, 4, 16, stride=2, name="b")
    model = _model(g, "float32", True, monkeypatch)
    plain = _model(g, "float32", False, monkeypatch)
    fused = _fused_adds(model)
    assert len(fused) == 1
    ex = model._executor
    names = [name for _, _, _, name in ex._steps]
    a = names.index(fused[0][1])

    def conv_behind(slot: int) -> int:  # the conv step behind an input slot (through a batch norm)
        k = slot - ex._first
        return k if ex._steps[k][2] == "conv2d" else ex._steps[k][1][0] - ex._first

    assert names.index(fused[0][0]) == max(conv_behind(i) for i in ex._steps[a][1])
    xb = np.random.default_rng(4).normal(size=(5, 8, 8, 8)).astype(np.float32)
    y0 = plain(xb)
    for _ in range(2):
        np.testing.assert_array_equal(model(xb).view(np.uint32), y0.view(np.uint32))
    np.testing.assert_allclose(model(xb), model(xb, grad=True), rtol=1e-5, atol=1e-5)  # unfolded, unfused
    assert model.memory_plan(5)["peak_activation_bytes"] <= plain.memory_plan(5)["peak_activation_bytes"]


def test_which_adds_are_fused(monkeypatch):
    g = nc.Graph()
    x = g.input((4, 6, 6))
    c1 = g.conv2d(x, out_channels=4, kernel_size=1, name="c1")
    a1 = g.add(c1, x, name="a1")  # c1 has a second reader (a2): not fused
    c2 = g.conv2d(a1, out_channels=4, kernel_size=1, name="c2")
    a2 = g.add(c2, c1, name="a2")  # c2 is read by a2 alone, c1 ran before it: c2 takes it
    c6 = g.conv2d(a2, out_channels=4, kernel_size=3, padding=1, name="c6")
    a6 = g.add(x, c6, name="a6")  # the conv second, the residual a graph input: fused
    c3 = g.conv2d(a2, out_channels=4, kernel_size=1, name="c3")
    a3 = g.add(c3, a6, x, name="a3")  # three inputs: not fused
    c4 = g.conv2d(a3, out_channels=4, kernel_size=1, name="c4")
    a4 = g.add(c4, a3, name="a4")  # c4 is also a graph output: not fused
    c5 = g.conv2d(a4, out_channels=4, kernel_size=1, name="c5")
    r5 = g.relu(c5, name="r5")  # c5's relu is fused into it; the add reads the relu: not fused
    g.output(g.add(r5, a4, name="a5"), c4)
    model = _model(g, "float32", True, monkeypatch)
    assert _fused_adds(model) == [("c2", "a2"), ("c6", "a6")]
    plain = _model(g, "float32", False, monkeypatch)
    xb = np.random.default_rng(6).normal(size=(2, 4, 6, 6)).astype(np.float32)
    for a, b in zip(model(xb), plain(xb)):
        np.testing.assert_array_equal(a, b)


def test_a_residual_computed_after_the_conv_is_not_fused(monkeypatch):
    # add(conv(x), relu(y)) where relu(y) runs after the conv in step order: the conv could
    # not read it, so the add stays.
    g = nc.Graph()
    x = g.input((3, 5, 5))
    c = g.conv2d(x, out_channels=3, kernel_size=1, name="c")
    late = g.sigmoid(x, name="late")
    g.output(g.add(c, late, name="a"))
    model = _model(g, "float32", True, monkeypatch)
    order = [name for _, _, _, name in model._executor._steps]
    if order.index("late") > order.index("c"):
        assert _fused_adds(model) == []
    else:
        assert _fused_adds(model) == [("c", "a")]
    xb = np.random.default_rng(2).normal(size=(2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(model(xb), _model(g, "float32", False, monkeypatch)(xb))


@pytest.mark.cuda
def test_cuda_twins_take_the_relu_and_the_residual():
    # The executor fuses on the CPU only; the CUDA twins take the same flag, residual, scale (a
    # folded batch norm's) and kernel name (one kernel interface) and must give the CPU's
    # answer: (conv * s + b) (+ r), then the relu.
    from numba import cuda

    from numbacnn.layers import add_cpu, add_cuda, conv2d_cpu, conv2d_cuda

    rng = np.random.default_rng(12)
    a, b = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    a[3] = np.nan
    want = np.empty_like(a)
    add_cpu.add_relu_forward(a, b, want)
    out = cuda.device_array(40, np.float32)
    add_cuda.add_relu_forward(cuda.to_device(a), cuda.to_device(b), out)
    np.testing.assert_array_equal(out.copy_to_host(), want)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    r = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    geo = (1, 3, 3, 1, 1, 1, 1, 1, 1)
    scale = rng.uniform(-2, 2, 4).astype(np.float32)
    for relu, residual, sc in ((True, None, None), (False, r, None), (True, r, None), (False, None, scale),
                               (True, r, scale)):
        plan = conv2d_cpu.conv2d_plan("c", x.shape, (2, 4, 6, 5), geo, False, "float32")
        y = np.empty((2, 4, 6, 5), np.float32)
        conv2d_cpu.conv2d_forward(x, w, bias, y, plan, tuple(np.empty(s, d or np.float32)
                                                             for s, d in plan.forward_scratch), relu, residual, sc)
        gplan = conv2d_cuda.conv2d_plan("c", x.shape, (2, 4, 6, 5), geo, False, "float32")
        gy = cuda.device_array((2, 4, 6, 5), np.float32)
        conv2d_cuda.conv2d_forward(cuda.to_device(x), cuda.to_device(w), cuda.to_device(bias), gy, gplan,
                                   tuple(cuda.device_array(s, d or np.float32) for s, d in gplan.forward_scratch),
                                   relu, None if residual is None else cuda.to_device(residual),
                                   None if sc is None else cuda.to_device(sc))
        assert (y == 0).any() == relu
        np.testing.assert_allclose(gy.copy_to_host(), y, rtol=1e-5, atol=1e-5)
