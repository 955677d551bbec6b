"""Inference-mode batch-norm folding (numbacnn._fold): folded inference against the same model
unfolded (NUMBACNN_FOLD_BN=0) and against PyTorch's eval mode; what is and is not folded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import numbacnn as nc


def _stats(model: nc.Model, seed: int) -> None:
    # Running statistics and affine parameters far from their initial 0/1, so a missed or
    # wrong fold shows.
    rng = np.random.default_rng(seed)
    for key, value in model.buffers.items():
        if key.endswith("running_mean"):
            value[...] = rng.normal(0.0, 0.5, value.shape)
        elif key.endswith("running_var"):
            value[...] = rng.uniform(0.3, 3.0, value.shape)
    for key, value in model.params.items():
        if "bn" in key.rpartition(".")[0]:
            weight = key.endswith("weight")
            value[...] = rng.uniform(0.5, 1.5, value.shape) if weight else rng.normal(0, 0.3, value.shape)


def _bottleneck() -> nc.Graph:
    # resnet_bottleneck's shape: bias-free convs + BN, a projection shortcut, 16 channels in
    # the 3x3 conv (the CPU's Winograd path, whose weight cache must see the folded weights).
    g = nc.Graph()
    x = g.input((8, 6, 6))
    h = nc.blocks.bottleneck(g, x, mid_channels=16, out_channels=12, name="b")
    g.output(h)
    return g


def _inception() -> nc.Graph:
    # googlenet-like branches joined by a concat; "c1" has two readers (its BN and a ReLU) and
    # must not be folded; "bn_x" reads a ReLU, not a conv; "c3" (with a bias) is folded.
    g = nc.Graph()
    x = g.input((4, 5, 5))
    c1 = g.conv2d(x, out_channels=3, kernel_size=1, name="c1")
    b1 = g.batch_norm2d(c1, name="bn1")
    r1 = g.relu(c1, name="r1")
    c3 = g.conv2d(g.relu(x, name="rx"), out_channels=5, kernel_size=3, padding=1, name="c3")
    b3 = g.relu(g.batch_norm2d(c3, name="bn3"), name="r3")
    bx = g.batch_norm2d(g.relu(x, name="rx2"), name="bn_x")
    g.output(g.concat(b1, r1, b3, bx, name="cat"))
    return g


def _model(graph: nc.Graph, dtype: str, fold: bool, monkeypatch: pytest.MonkeyPatch) -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FOLD_BN", "1" if fold else "0")
    model = nc.Model(graph, seed=3, dtype=dtype)
    _stats(model, 7)
    return model


def _pair(graph: nc.Graph, dtype: str, monkeypatch: pytest.MonkeyPatch) -> tuple[nc.Model, nc.Model]:
    return _model(graph, dtype, True, monkeypatch), _model(graph, dtype, False, monkeypatch)


def _torch_eval(model: nc.Model, x: np.ndarray) -> np.ndarray:
    """PyTorch's eval mode, node by node over the model's graph (conv2d, batch_norm2d, relu,
    add, concat: what these graphs use)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = {k: torch.from_numpy(np.array(v)) for k, v in {**model.params, **model.buffers}.items()}
    vals = {model.graph.inputs[0]: torch.from_numpy(x)}
    for name in model.order:
        node = model.graph.nodes[name]
        layer, ins = node.obj, [vals[i] for i in node.inputs]
        if node.layer == "conv2d":
            pt, pb, pl, pr = layer.pads
            h = F.pad(ins[0], (pl, pr, pt, pb))
            y = F.conv2d(h, t[f"{name}.weight"], t.get(f"{name}.bias"), layer.stride, 0, layer.dilation, layer.groups)
        elif node.layer == "batch_norm2d":
            y = F.batch_norm(ins[0], t[f"{name}.running_mean"], t[f"{name}.running_var"], t[f"{name}.weight"],
                             t[f"{name}.bias"], training=False, eps=layer.eps)
        elif node.layer == "relu":
            y = F.relu(ins[0])
        elif node.layer == "add":
            y = ins[0] + ins[1]
        elif node.layer == "concat":
            y = torch.cat(ins, 1)
        else:
            raise AssertionError(f"no reference for {node.layer}")
        vals[name] = y
    return vals[model.graph.outputs[0]].numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("graph", [_bottleneck, _inception])
def test_folded_matches_unfolded_and_torch_eval(graph, dtype, monkeypatch):
    folded, plain = _pair(graph(), dtype, monkeypatch)
    assert folded._executor._folds and not plain._executor._folds
    x = np.random.default_rng(0).normal(size=(3, *folded.input_shapes[0])).astype(dtype)
    y, y0 = folded(x), plain(x)
    assert y.dtype == np.dtype(dtype)
    scale = np.abs(y0).max()
    tol = 1e-5 if dtype == "float32" else 1e-13
    assert np.abs(y - y0).max() <= tol * scale
    assert np.abs(y - _torch_eval(plain, x.astype(np.float64) if dtype == "float64" else x)).max() <= tol * scale
    assert np.array_equal(folded(x), y)  # the replay: the same folded arrays, the same result


def test_what_is_folded(monkeypatch):
    names = lambda m: [(m.order[j], m.order[k]) for j, k in m._executor._folds]  # noqa: E731
    inc = _model(_inception(), "float32", True, monkeypatch)
    assert names(inc) == [("c3", "bn3")]  # not c1 (two readers), not bn_x (after a relu)
    res = _model(_bottleneck(), "float32", True, monkeypatch)
    assert {bn for _, bn in names(res)} == {n for n in res.order if res.graph.nodes[n].layer == "batch_norm2d"}
    # A conv whose output is a graph output keeps it: nothing folded.
    g = nc.Graph()
    x = g.input((2, 4, 4))
    c = g.conv2d(x, out_channels=2, kernel_size=1, name="c")
    g.output(c, g.batch_norm2d(c, name="bn"))
    assert names(_model(g, "float32", True, monkeypatch)) == []


def test_edits_in_place_are_seen_by_the_next_call(monkeypatch):
    folded, plain = _pair(_bottleneck(), "float32", monkeypatch)
    x = np.random.default_rng(1).normal(size=(2, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(folded(x), plain(x), rtol=1e-5, atol=1e-5)
    conv = next(k for k in folded.params if k.endswith(".weight") and folded.params[k].shape[2:] == (3, 3))
    bn = next(k for k in folded.buffers if k.endswith("running_var"))
    mean = next(k for k in folded.buffers if k.endswith("running_mean"))
    gamma = next(k for k in folded.params if "bn" in k and k.endswith(".weight"))
    for edit in (lambda m: m.params[conv].__imul__(-2.0), lambda m: m.buffers[bn].__imul__(4.0),
                 lambda m: m.buffers[mean].__iadd__(1.0), lambda m: m.params[gamma].__imul__(-0.5)):
        before = folded(x)
        edit(folded)
        edit(plain)
        y0 = plain(x)
        y = folded(x)
        assert not np.allclose(before, y0, rtol=1e-3, atol=1e-3)  # the edit matters
        np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5 * np.abs(y0).max())


def test_folded_convs_read_the_live_weights_and_keep_no_copy_of_them(monkeypatch):
    # A folded conv reads the model's own weight array and scales its output per channel
    # (conv2d_forward's scale): the fold holds no scaled copy of the weights and no copy to
    # compare them with on every call (the two cost resnet_bottleneck's batch-1 inference
    # 80-90 us of about 900), only per-channel arrays; a weight edited in place is read as it is.
    folded, plain = _pair(_bottleneck(), "float32", monkeypatch)
    x = np.random.default_rng(4).normal(size=(1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(folded(x), plain(x), rtol=1e-5, atol=1e-5)
    folds = folded._executor.thread_pass().folds
    weights = 0
    for (conv, _, _), ctx in zip(folds._pairs, folds._folded):
        K = conv.params["weight"].shape[0]
        assert ctx.params["weight"] is conv.params["weight"] and set(ctx.params) == {"weight", "bias"}
        assert ctx._scale.shape == ctx.params["bias"].shape == (K,)
        weights += conv.params["weight"].nbytes
    assert sum(a.nbytes for a in folds._args[-1]) + folds._args[4].nbytes < weights
    key = next(k for k in folded.params if k.endswith(".weight") and folded.params[k].shape[2:] == (3, 3))
    for m in (folded, plain):
        m.params[key][0, 0, 1, 1] = np.nan
    y, y0 = folded(x), plain(x)
    assert np.array_equal(np.isnan(y), np.isnan(y0)) and np.isnan(y).any()
    assert folds.refresh() == 0  # nothing per channel changed: nothing to fold again


def test_training_and_gradient_passes_are_unfolded(monkeypatch):
    folded, plain = _pair(_bottleneck(), "float64", monkeypatch)
    x = np.random.default_rng(2).normal(size=(4, 8, 6, 6))
    # Batch statistics: bit for bit what the unfolded model computes, running stats updated alike.
    assert np.array_equal(folded(x, training=True, grad=False), plain(x, training=True, grad=False))
    for k in plain.buffers:
        assert np.array_equal(folded.buffers[k], plain.buffers[k])
    assert np.array_equal(folded(x, training=False, grad=True), plain(x, training=False, grad=True))
    y = folded(x)  # inference after the statistics moved: folded from the new ones
    np.testing.assert_allclose(y, plain(x), rtol=1e-12, atol=1e-12)


def test_threads_fold_each_their_own(monkeypatch):
    folded, plain = _pair(_inception(), "float32", monkeypatch)
    xs = [np.random.default_rng(s).normal(size=(1 + s, 4, 5, 5)).astype(np.float32) for s in range(4)]
    want = [plain(x) for x in xs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                np.testing.assert_allclose(folded(xs[i]), want[i], rtol=1e-5, atol=1e-6)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_memory_plan_and_summary_run_folded(monkeypatch):
    folded, plain = _pair(_bottleneck(), "float32", monkeypatch)
    assert folded.summary() == plain.summary()
    mp, mp0 = folded.memory_plan(2), plain.memory_plan(2)
    # The same rows (a folded batch norm's output is its conv's buffer, under its own name);
    # unfolded, inference runs the batch norm in place: the peak is no higher either way (the
    # arena may hand a later node a different buffer, so rows after a fold can differ).
    assert [(r["node"], r["bytes"]) for r in mp["rows"]] == [(r["node"], r["bytes"]) for r in mp0["rows"]]
    assert mp["keep_all_bytes"] == mp0["keep_all_bytes"]
    assert mp["peak_activation_bytes"] <= mp0["peak_activation_bytes"]


@pytest.mark.cuda
def test_cuda_runs_unfolded(monkeypatch):
    # Folding is CPU only: on CUDA the batch norm runs as its own node, and the answer is the
    # CPU's (folded) within float32 rounding.
    g = nc.Graph()
    x = g.input((2, 3, 3))
    g.output(g.batch_norm2d(g.conv2d(x, out_channels=2, kernel_size=1, name="c"), name="bn"))
    model = _model(g, "float32", True, monkeypatch)
    xb = np.random.default_rng(4).normal(size=(2, 2, 3, 3)).astype(np.float32)
    y = model(xb)
    assert model._executor._folds
    model.to("cuda")
    assert model._executor._folds == []
    np.testing.assert_allclose(model(xb), y, rtol=1e-5, atol=1e-6)


def test_one_kernel_specialisation_for_any_number_of_pairs(monkeypatch):
    # The arrays used to reach the kernel as tuples, a type of their own for each length: every
    # model with a different number of pairs compiled the kernel again (3-6 s each).
    from numbacnn._fold_cpu import fold

    seen = set()
    for graph in (_bottleneck, _inception):  # 4 and 1 folded pairs
        for dtype in ("float32", "float64"):
            folded, plain = _pair(graph(), dtype, monkeypatch)
            x = np.random.default_rng(1).normal(size=(2, *folded.input_shapes[0])).astype(dtype)
            np.testing.assert_allclose(folded(x), plain(x), rtol=1e-5 if dtype == "float32" else 1e-12,
                                       atol=1e-5 if dtype == "float32" else 1e-12)
            seen.add(len(folded._executor._folds))
    assert seen == {4, 1}
    assert len(fold.signatures) == 2, fold.signatures  # one per dtype, whatever the count

