"""Inference's joined 1x1 convolutions (numbacnn._joined): a residual join of two 1x1 convs (a
bottleneck's conv3 and its projection shortcut), each with or without a folded batch norm, run at
the earlier conv's step (layers/_joined_cpu from JOINED_MIN_BATCH samples, each member's own
forward below). Against the same model with the join fused into the later conv alone: bit for
bit, NaN and the infinities included; against a float64 NumPy reference; over calls that
replay the kernel call on new data in the same arrays and switch batch sizes; at stride 1 and
2, with and without bias, batch norm and relu; what is not joined; training untouched."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _joined

SMALL = _joined.JOINED_MIN_BATCH


def _graph(stride: int = 1, bn: str = "ab", bias: bool = False, relu: bool = True, a_read_twice: bool = False,
           late_input: bool = False) -> nc.Graph:
    # a = 1x1(x1) (+ bn where ``bn`` names it), b = 1x1(x2) at ``stride`` (+ bn), out = relu?(a + b):
    # x1 (4, 5, 4) is x2's (3, 9, 7) plane at the stride. ``late_input``: b reads relu(x2), a step after a.
    g = nc.Graph()
    x1, x2 = g.input((4, 9 if stride == 1 else 5, 7 if stride == 1 else 4), name="x1"), g.input((3, 9, 7), name="x2")
    a = g.conv2d(x1, out_channels=6, kernel_size=1, bias=bias, name="a")
    if "a" in bn:
        a = g.batch_norm2d(a, name="bna")
    src = g.relu(x2, name="late") if late_input else x2
    b = g.conv2d(src, out_channels=6, kernel_size=1, stride=stride, bias=bias, name="b")
    if "b" in bn:
        b = g.batch_norm2d(b, name="bnb")
    y = g.add(a, b, name="join")
    outs = [g.relu(y, name="out") if relu else y]
    if a_read_twice:
        outs.append(a)
    g.output(*outs)
    return g


def _model(graph: nc.Graph, joined: bool, monkeypatch: pytest.MonkeyPatch, dtype: str = "float32",
           fuse: bool = True) -> nc.Model:
    # joined=False: the same fusions but this one (the join inside the later conv alone)
    with monkeypatch.context() as m:
        m.setenv("NUMBACNN_FUSE_RELU", "1" if fuse else "0")
        if not joined:
            m.setattr(_joined, "pairs", lambda *args: [])
        model = nc.Model(graph, seed=5, dtype=dtype)
    rng = np.random.default_rng(11)  # statistics and affine parameters far from 0 / 1
    for key, value in model.buffers.items():
        value[...] = rng.normal(0, 0.5, value.shape) if key.endswith("mean") else rng.uniform(0.3, 3, value.shape)
    for key, value in model.params.items():
        if key.startswith("bn"):
            value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("weight") else rng.normal(0, 0.3, value.shape)
    return model


def _joined_names(model: nc.Model) -> list[tuple[str, str]]:
    ex = model._executor
    return [(ex._steps[k][3], ex._steps[f.partner][3]) for k, f in enumerate(ex._inference)
            if isinstance(f, _joined.JoinedConvs)]


def _conv_bn(model: nc.Model, x: np.ndarray, conv: str, bn: str | None, stride: int) -> np.ndarray:
    """A 1x1 conv2d at ``stride`` (+ bias) (then its batch norm's evaluation) in float64."""
    w = model.params[f"{conv}.weight"].astype(np.float64)[:, :, 0, 0]
    y = np.einsum("nchw,kc->nkhw", x.astype(np.float64)[:, :, ::stride, ::stride], w)
    if f"{conv}.bias" in model.params:
        y += model.params[f"{conv}.bias"].astype(np.float64)[None, :, None, None]
    if bn is not None:
        m, v = (model.buffers[f"{bn}.running_{s}"].astype(np.float64)[None, :, None, None] for s in ("mean", "var"))
        g, b = (model.params[f"{bn}.{s}"].astype(np.float64)[None, :, None, None] for s in ("weight", "bias"))
        y = (y - m) / np.sqrt(v + 1e-5) * g + b
    return y


def _data(seed: int, n: int, stride: int, special: bool, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n, 4, 9 if stride == 1 else 5, 7 if stride == 1 else 4)).astype(dtype)
    x2 = rng.normal(size=(n, 3, 9, 7)).astype(dtype)
    if special:  # NaN and both infinities in the last sample, each through both members' paths
        x1[-1, 1, 2, 3], x2[-1, 0, 4, 2], x2[-1, 2, 0, 0] = np.nan, np.inf, -np.inf
    return x1, x2


def test_pairs_found():
    assert _joined_names(nc.zoo.resnet_bottleneck()) == [
        (f"stage{s}.block1.conv3", f"stage{s}.block1.proj") for s in (1, 2, 3)]
    assert _joined_names(nc.zoo.resnet_basic()) == []  # a 3x3 conv2 beside the projection
    assert _joined_names(nc.Model(_graph(stride=2), seed=0)) == [("a", "b")]


def test_what_is_not_joined(monkeypatch):
    assert _joined_names(_model(_graph(), True, monkeypatch, fuse=False)) == []
    assert _joined_names(_model(_graph(a_read_twice=True), True, monkeypatch)) == []
    late = _model(_graph(late_input=True), True, monkeypatch)
    order = [name for _, _, _, name in late._executor._steps]
    assert order.index("late") > order.index("a")  # b's input comes after a: a cannot run b
    assert _joined_names(late) == []
    for pad, groups in ((1, 1), (0, 2)):  # a padded or grouped 1x1 is not joined
        g = nc.Graph()
        x1, x2 = g.input((4, 5, 5), name="x1"), g.input((4, 5 - 2 * pad, 5 - 2 * pad), name="x2")
        g.output(g.add(g.conv2d(x1, out_channels=4, kernel_size=1, name="a"),
                       g.conv2d(x2, out_channels=4, kernel_size=1, padding=pad, groups=groups, name="b")))
        assert _joined_names(nc.Model(g, seed=0)) == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stride,bn,bias,relu", [(1, "ab", False, True), (2, "ab", False, True),
                                                 (2, "", True, False), (1, "", False, False), (2, "ab", True, False),
                                                 (1, "", True, True), (2, "a", False, True), (2, "b", True, True)])
def test_joined_match_the_unjoined_model_and_the_reference(dtype, stride, bn, bias, relu, monkeypatch):
    graph = _graph(stride, bn, bias, relu)
    joined, plain = _model(graph, True, monkeypatch, dtype), _model(graph, False, monkeypatch, dtype)
    assert _joined_names(joined) == [("a", "b")] and _joined_names(plain) == []
    tol = 1e-5 if dtype == "float32" else 1e-12
    # batch sizes in turn: each new signature plans afresh, each repeat replays; new data every call
    for seed, n in enumerate([1, SMALL, 1, 5, SMALL, 3, 8, 5]):
        x1, x2 = _data(seed, n, stride, special=seed % 3 == 1, dtype=dtype)
        y, want = joined.forward(x1, x2), plain.forward(x1, x2)
        assert y.shape == want.shape and y.dtype == want.dtype
        np.testing.assert_array_equal(y, want)  # the same products, summed in the same order
        ref = (_conv_bn(joined, x2, "b", "bnb" if "b" in bn else None, stride)
               + _conv_bn(joined, x1, "a", "bna" if "a" in bn else None, 1))
        ref = np.maximum(ref, 0) if relu else ref
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


def test_replay_reads_new_data_in_the_same_arrays(monkeypatch):
    # The second call of a signature replays the kernel call kept by the first without Python
    # while the inputs are the same arrays: it must read what they hold now.
    graph = _graph(stride=2)
    joined, plain = _model(graph, True, monkeypatch), _model(graph, False, monkeypatch)
    for n in (SMALL + 2, 1):
        x1, x2 = _data(0, n, 2, special=False)
        for seed in range(4):
            new1, new2 = _data(seed + 1, n, 2, special=seed == 2)
            x1[...], x2[...] = new1, new2
            np.testing.assert_array_equal(joined.forward(x1, x2), plain.forward(x1.copy(), x2.copy()))


def test_training_and_gradient_passes_run_unjoined(monkeypatch):
    graph = _graph(stride=2)
    joined, plain = _model(graph, True, monkeypatch), _model(graph, False, monkeypatch, fuse=False)
    x1, x2 = _data(3, 4, 2, special=False)
    joined.forward(x1, x2)  # an inference first: its plans stay its own
    for kw in ({"training": True}, {"grad": True}):
        np.testing.assert_array_equal(joined.forward(x1, x2, **kw), plain.forward(x1, x2, **kw))
    gy = np.random.default_rng(0).normal(size=joined.forward(x1, x2, grad=True).shape).astype(np.float32)
    plain.forward(x1, x2, grad=True)
    for g, w in zip(joined.backward(gy), plain.backward(gy)):
        np.testing.assert_array_equal(g, w)


def test_resnet_bottleneck_matches_its_unfused_self(monkeypatch):
    fused = nc.zoo.resnet_bottleneck()
    monkeypatch.setenv("NUMBACNN_FUSE_RELU", "0")
    plain = nc.zoo.resnet_bottleneck()
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    for n in (3, 1, SMALL):
        np.testing.assert_allclose(fused.forward(x[:n]), plain.forward(x[:n]), rtol=1e-5, atol=1e-6)


def test_both_members_reading_one_input(monkeypatch):
    # add(1x1(x), 1x1(x)): the earlier conv's step reads x twice (its readers counted twice).
    g = nc.Graph()
    x = g.input((5, 6, 7))
    g.output(g.relu(g.add(g.conv2d(x, out_channels=8, kernel_size=1, name="a"),
                          g.conv2d(x, out_channels=8, kernel_size=1, bias=False, name="b"))))
    joined, plain = _model(g, True, monkeypatch), _model(g, False, monkeypatch)
    assert _joined_names(joined) == [("a", "b")]
    for seed, n in enumerate([3, 1, 3, SMALL]):
        xs = np.random.default_rng(seed).normal(size=(n, 5, 6, 7)).astype(np.float32)
        np.testing.assert_array_equal(joined.forward(xs), plain.forward(xs))
        w = joined.params["a.weight"][:, :, 0, 0] + joined.params["b.weight"][:, :, 0, 0]
        ref = np.einsum("nchw,kc->nkhw", xs.astype(np.float64), w.astype(np.float64))
        ref += joined.params["a.bias"].astype(np.float64)[None, :, None, None]
        np.testing.assert_allclose(joined.forward(xs), np.maximum(ref, 0), rtol=1e-5, atol=1e-5)


def _merged(model: nc.Model) -> list[bool]:
    """Per joined step and planned signature (in planning order): whether it made one kernel."""
    return [bool(v) for p in model._executor.thread_pass().plans.values() for d in p.plans for k, v in d.items()
            if isinstance(k, tuple) and k[0] == "joined" and not isinstance(v, dict)]


def test_one_kernel_only_where_each_member_would_run_whole_sample_im2col(monkeypatch):
    # A member that on its own would take another path (forced shifted taps here, AVX-512's
    # default for a 16 -> 64 1x1; pixel-major's stacked samples for a strided 1x1 into a 4x4
    # plane with 256x256 weights) makes both run their own forwards: bit for bit the unjoined model.
    from numbacnn.layers.conv2d_cpu import force_path

    x1, x2 = _data(0, 4, 1, special=True)
    joined, plain = _model(_graph(1), True, monkeypatch), _model(_graph(1), False, monkeypatch)
    with force_path("shift"):
        np.testing.assert_array_equal(joined.forward(x1, x2), plain.forward(x1, x2))
    assert _merged(joined) == [False]
    np.testing.assert_array_equal(joined.forward(x1[:3], x2[:3]), plain.forward(x1[:3], x2[:3]))
    assert _merged(joined) == [False, True]  # a new signature, planned outside the block
    g = nc.Graph()
    a, b = g.input((256, 4, 4), name="x1"), g.input((256, 8, 8), name="x2")
    g.output(g.add(g.conv2d(a, out_channels=256, kernel_size=1, name="a"),
                   g.conv2d(b, out_channels=256, kernel_size=1, stride=2, name="b")))
    joined, plain = _model(g, True, monkeypatch), _model(g, False, monkeypatch)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(4, 256, 4, 4)).astype(np.float32), rng.normal(size=(4, 256, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(joined.forward(*xs), plain.forward(*xs))
    assert _merged(joined) == [False]


def test_a_batch_split_over_more_threads_runs_the_members_apart():
    # With 4 threads a batch of 2 or 3 splits each sample of these convs over the threads
    # (conv2d_cpu.SPLIT_MIN_MACS): the members run their own forwards, bit for bit unjoined.
    import os
    import subprocess
    import sys

    script = """
import numpy as np, numbacnn as nc
from numbacnn import _joined
def graph():
    g = nc.Graph()
    a, b = g.input((64, 16, 16), name="x1"), g.input((64, 16, 16), name="x2")
    g.output(g.add(g.conv2d(a, out_channels=256, kernel_size=1, name="a"),
                   g.conv2d(b, out_channels=256, kernel_size=1, name="b")))
    return g
joined = nc.Model(graph(), seed=0)
_joined.pairs = lambda *args: []
plain = nc.Model(graph(), seed=0)
rng = np.random.default_rng(0)
for n in (2, 3, 4):
    xs = rng.normal(size=(n, 64, 16, 16)).astype(np.float32), rng.normal(size=(n, 64, 16, 16)).astype(np.float32)
    assert np.array_equal(joined.forward(*xs), plain.forward(*xs)), n
print([bool(v) for p in joined._executor.thread_pass().plans.values() for d in p.plans for k, v in d.items()
       if isinstance(k, tuple) and k[0] == "joined" and not isinstance(v, dict)])
"""
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[False, False, True]"
