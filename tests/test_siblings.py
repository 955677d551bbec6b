"""Inference's sibling 1x1 convolutions (numbacnn._siblings): conv2d nodes that are 1x1, stride 1,
unpadded and ungrouped and read one value run at the first one's step, which hands the others
their outputs; from MERGED_MIN_BATCH samples as one product a sample (layers/_siblings_cpu),
below it each on its own path. Against the same model unfused (NUMBACNN_FUSE_RELU=0): bit for
bit below MERGED_MIN_BATCH, within float32 rounding above it (a taller product rounds
differently), NaN and the infinities where the unfused model has them; against a float64 NumPy
reference; over calls that replay the first one's kernel calls on new data and switch batch
sizes; with and without bias and relu, outputs read twice or returned; what is not grouped;
training untouched."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _siblings

MERGED = _siblings.MERGED_MIN_BATCH


def _graph(bn: bool = False) -> nc.Graph:
    # x -> a (bias, relu), b (no bias, relu), c (bias, no relu; read twice), plus convs that are
    # not siblings: d (3x3), e (1x1 at stride 2), f (1x1, groups 2)
    g = nc.Graph()
    x = g.input((6, 7, 9))
    a = g.relu(g.conv2d(x, out_channels=5, kernel_size=1, name="a"), name="ra")
    b = g.relu(g.conv2d(x, out_channels=3, kernel_size=1, bias=False, name="b"), name="rb")
    c = g.conv2d(x, out_channels=4, kernel_size=1, name="c")
    d = g.conv2d(x, out_channels=2, kernel_size=3, padding=1, name="d")
    e = g.conv2d(x, out_channels=2, kernel_size=1, stride=2, name="e")
    f = g.conv2d(x, out_channels=2, kernel_size=1, groups=2, name="f")
    outs = [a, b, c, g.relu(c, name="rc"), d, e, f]
    if bn:  # a fourth 1x1 with a batch norm folded into it: on its own
        outs.append(g.batch_norm2d(g.conv2d(x, out_channels=3, kernel_size=1, name="h"), name="bn"))
    g.output(*outs)
    return g


def _model(graph: nc.Graph, fuse: bool, monkeypatch: pytest.MonkeyPatch, dtype: str = "float32") -> nc.Model:
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
    model = nc.Model(graph, seed=7, dtype=dtype)
    monkeypatch.delenv("NUMBACNN_FUSE_RELU")
    return model


def _groups(model: nc.Model) -> list[list[str]]:
    """Node names of each sibling group, first member first."""
    ex = model._executor
    names = [name for _, _, _, name in ex._steps]
    firsts: dict[int, list[str]] = {}
    for k, (first, _) in sorted(ex._handed.items()):
        firsts.setdefault(first, [names[first]]).append(names[k])
    return list(firsts.values())


def _reference(model: nc.Model, x: np.ndarray, name: str, relu: bool) -> np.ndarray:
    """A 1x1 conv2d (+ bias) (then relu) in float64, written here."""
    w = model.params[f"{name}.weight"].astype(np.float64)[:, :, 0, 0]
    y = np.einsum("nchw,kc->nkhw", x.astype(np.float64), w)
    if f"{name}.bias" in model.params:
        y += model.params[f"{name}.bias"].astype(np.float64)[None, :, None, None]
    return np.maximum(y, 0) if relu else y


def _data(seed: int, n: int, special: bool) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 6, 7, 9)).astype(np.float32)
    if special:  # NaN and the infinities in sample 0 (each reaches every output channel at its pixel)
        x[0, 1, 2, 3], x[0, 4, 5, 1], x[0, 2, 6, 8] = np.nan, np.inf, -np.inf
    return x


def test_siblings_are_grouped(monkeypatch):
    fused = _model(_graph(bn=True), True, monkeypatch)
    assert _groups(fused) == [["a", "b", "c"]]
    assert isinstance(fused._executor._inference[fused._executor._steps.index(
        next(s for s in fused._executor._steps if s[3] == "a"))], _siblings.SiblingConvs)
    assert _groups(_model(_graph(), False, monkeypatch)) == []
    assert _groups(nc.zoo.googlenet_mini()) == [
        [f"{m}.conv1", f"{m}.conv3_reduce", f"{m}.conv5_reduce"] for m in ("inc3a", "inc3b", "inc4a", "inc4b", "inc5a")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_siblings_match_the_unfused_model_and_the_reference(dtype, monkeypatch):
    graph = _graph(bn=True)
    fused, plain = _model(graph, True, monkeypatch, dtype), _model(graph, False, monkeypatch, dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    # batch sizes in turn: each new signature plans afresh, each repeat replays; new data every call
    for seed, n in enumerate([1, MERGED, 1, MERGED, 3, MERGED + 5, MERGED]):
        x = _data(seed, n, special=seed % 2 == 1).astype(dtype)
        ys, want = fused.forward(x), plain.forward(x)
        for y, w in zip(ys, want):
            assert y.shape == w.shape and y.dtype == w.dtype
            if n < MERGED:
                np.testing.assert_array_equal(y, w)  # each member on its own path: the same kernels
            else:
                np.testing.assert_array_equal(np.isnan(y), np.isnan(w))
                np.testing.assert_array_equal(np.isinf(y) * np.sign(y), np.isinf(w) * np.sign(w))
                np.testing.assert_allclose(y, w, rtol=tol, atol=tol)
        refs = [_reference(fused, x, "a", True), _reference(fused, x, "b", True), _reference(fused, x, "c", False)]
        refs.append(np.maximum(refs[2], 0))
        for y, ref in zip(ys, refs):
            with np.errstate(invalid="ignore"):
                np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


def test_training_and_gradient_passes_run_unfused(monkeypatch):
    graph = _graph()
    fused, plain = _model(graph, True, monkeypatch), _model(graph, False, monkeypatch)
    x = _data(3, MERGED, special=False)
    fused.forward(x)  # an inference first: its plans stay its own
    for kw in ({"training": True}, {"grad": True}):
        for y, w in zip(fused.forward(x, **kw), plain.forward(x, **kw)):
            np.testing.assert_array_equal(y, w)


def test_googlenet_mini_matches_its_unfused_self(monkeypatch):
    fused = nc.zoo.googlenet_mini()
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "0")
    plain = nc.zoo.googlenet_mini()
    x = np.random.default_rng(0).normal(size=(MERGED, 3, 32, 32)).astype(np.float32)
    for n in (MERGED, 1, MERGED):
        np.testing.assert_allclose(fused.forward(x[:n]), plain.forward(x[:n]), rtol=1e-5, atol=1e-6)
