"""Blocks against a naive NumPy composition of the same operations, finite differences, errors.

The reference below is a tiny reverse-mode tape over naive NumPy ops (convolution as a sum of
shifted einsums, batch norm in training mode, max-pool by stacking windows), written
independently of the kernels; it runs in float64 on the float32 model's weights.
"""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import numeric_grad

BN_EPS = 1e-5  # PyTorch's default, the batch_norm2d default


# naive NumPy reference: values carry their gradient and a backward closure -----------------
class V:
    def __init__(self, data, parents=(), back=None, tape=None):
        self.data, self.parents, self.back, self.grad = data, parents, back, None
        if tape is not None:
            tape.append(self)


class Naive:
    """Reverse-mode tape; parameters are leaves named like the model's ``params`` keys."""

    def __init__(self, params):
        self.tape = []
        self.leaves = {k: V(np.asarray(v, np.float64)) for k, v in params.items()}

    def op(self, data, parents, back):
        return V(data, parents, back, self.tape)

    def conv(self, x, name, stride=1, padding=0):
        w = self.leaves[f"{name}.weight"]
        b = self.leaves.get(f"{name}.bias")
        xd, wd = x.data, w.data
        N, C, H, W = xd.shape
        K, _, R, S = wd.shape
        P, Q = (H + 2 * padding - R) // stride + 1, (W + 2 * padding - S) // stride + 1
        xp = np.pad(xd, ((0, 0), (0, 0), (padding, padding), (padding, padding)))

        def win(a, r, s):
            return a[:, :, r:r + stride * (P - 1) + 1:stride, s:s + stride * (Q - 1) + 1:stride]

        y = np.zeros((N, K, P, Q))
        for r in range(R):
            for s in range(S):
                y += np.einsum("nchw,kc->nkhw", win(xp, r, s), wd[:, :, r, s])
        if b is not None:
            y += b.data[None, :, None, None]

        def back(gy):
            gxp, gw = np.zeros_like(xp), np.zeros_like(wd)
            for r in range(R):
                for s in range(S):
                    gw[:, :, r, s] = np.einsum("nkhw,nchw->kc", gy, win(xp, r, s))
                    win(gxp, r, s)[...] += np.einsum("nkhw,kc->nchw", gy, wd[:, :, r, s])
            gx = gxp[:, :, padding:padding + H, padding:padding + W]
            return (gx, gw) + ((gy.sum(axis=(0, 2, 3)),) if b is not None else ())

        return self.op(y, (x, w) + ((b,) if b is not None else ()), back)

    def bn(self, x, name):
        g, b = self.leaves[f"{name}.weight"], self.leaves[f"{name}.bias"]
        axes = (0, 2, 3)
        mu = x.data.mean(axis=axes, keepdims=True)
        inv = 1 / np.sqrt(x.data.var(axis=axes, keepdims=True) + BN_EPS)
        xhat = (x.data - mu) * inv
        y = g.data[None, :, None, None] * xhat + b.data[None, :, None, None]

        def back(gy):
            m = gy.size / gy.shape[1]
            gxhat = gy * g.data[None, :, None, None]
            gx = inv / m * (m * gxhat - gxhat.sum(axis=axes, keepdims=True)
                            - xhat * (gxhat * xhat).sum(axis=axes, keepdims=True))
            return gx, (gy * xhat).sum(axis=axes), gy.sum(axis=axes)

        return self.op(y, (x, g, b), back)

    def relu(self, x):
        return self.op(np.maximum(x.data, 0), (x,), lambda gy: (gy * (x.data > 0),))

    def max_pool3(self, x):
        """3x3 max-pool, stride 1, padding 1 (padding never wins: each window holds its centre)."""
        N, C, H, W = x.data.shape
        xp = np.pad(x.data, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        wins = np.stack([xp[:, :, r:r + H, s:s + W] for r in range(3) for s in range(3)])
        arg = wins.argmax(axis=0)
        y = np.take_along_axis(wins, arg[None], axis=0)[0]

        def back(gy):
            gxp = np.zeros_like(xp)
            for j in range(9):
                gxp[:, :, j // 3:j // 3 + H, j % 3:j % 3 + W] += gy * (arg == j)
            return (gxp[:, :, 1:1 + H, 1:1 + W],)

        return self.op(y, (x,), back)

    def concat(self, *xs):
        ends = np.cumsum([x.data.shape[1] for x in xs])[:-1]
        return self.op(np.concatenate([x.data for x in xs], axis=1), xs,
                       lambda gy: tuple(np.split(gy, ends, axis=1)))

    def add(self, a, b):
        return self.op(a.data + b.data, (a, b), lambda gy: (gy, gy))

    def backward(self, out, gy):
        out.grad = gy
        for v in reversed(self.tape):
            if v.grad is None:
                continue
            for p, g in zip(v.parents, v.back(v.grad)):
                p.grad = g.copy() if p.grad is None else p.grad + g
        return {k: v.grad for k, v in self.leaves.items()}


def naive_inception(net, x, name):
    def conv_relu(h, conv, k):
        return net.relu(net.conv(h, f"{name}.{conv}", padding=k // 2))

    b1 = conv_relu(x, "conv1", 1)
    b3 = conv_relu(conv_relu(x, "conv3_reduce", 1), "conv3", 3)
    b5 = conv_relu(conv_relu(x, "conv5_reduce", 1), "conv5", 5)
    bp = conv_relu(net.max_pool3(x), "pool_proj", 1)
    return net.concat(b1, b3, b5, bp)


def naive_residual(net, x, name, kind, stride, project):
    def conv_bn(h, conv, bn, k, s):
        return net.bn(net.conv(h, f"{name}.{conv}", stride=s, padding=k // 2), f"{name}.{bn}")

    if kind == "bottleneck":
        h = net.relu(conv_bn(x, "conv1", "bn1", 1, 1))
        h = net.relu(conv_bn(h, "conv2", "bn2", 3, stride))
        h = conv_bn(h, "conv3", "bn3", 1, 1)
    else:
        h = net.relu(conv_bn(x, "conv1", "bn1", 3, stride))
        h = conv_bn(h, "conv2", "bn2", 3, 1)
    shortcut = conv_bn(x, "proj", "proj_bn", 1, stride) if project else x
    return net.relu(net.add(h, shortcut))


# the blocks under test ------------------------------------------------------------------------
INCEPTION = dict(c1=4, c3_reduce=3, c3=5, c5_reduce=2, c5=3, pool_proj=2)
# (kind, block arguments, expects a projection shortcut); input is (2, 8, 6, 6)
RESIDUAL = {
    "bottleneck-identity": ("bottleneck", dict(mid_channels=4, out_channels=8), False),
    "bottleneck-projection-stride": ("bottleneck", dict(mid_channels=4, out_channels=12, stride=2), True),
    "bottleneck-projection-channels": ("bottleneck", dict(mid_channels=3, out_channels=6), True),
    "basic-identity": ("basic_block", dict(out_channels=8), False),
    "basic-projection": ("basic_block", dict(out_channels=10, stride=2), True),
}
X_SHAPE = (2, 8, 6, 6)


def block_graph(kind, **kw):
    g = nc.Graph()
    x = g.input(X_SHAPE[1:])
    g.output(getattr(nc.blocks, kind)(g, x, name="blk", **kw))
    return g


def randomise(model, seed=0):
    """Fixed, non-trivial weights: BN scales and shifts away from 1 and 0 as well."""
    rng = np.random.default_rng(seed)
    for key, p in model.params.items():
        if key.endswith(".weight") and p.ndim == 1:
            p[...] = rng.uniform(0.5, 1.5, p.shape)
        else:
            p[...] = rng.standard_normal(p.shape) * (0.5 if p.ndim == 1 else 1 / np.sqrt(p[0].size))


def naive_forward(kind, model, x, **kw):
    net = Naive(model.params)
    xv = V(np.asarray(x, np.float64))
    if kind == "inception":
        y = naive_inception(net, xv, "blk")
    else:
        y = naive_residual(net, xv, "blk", kind, kw.get("stride", 1), "blk.proj.weight" in model.params)
    return net, xv, y


def assert_close(a, b, what, rtol=1e-4):
    """float32 against the float64 reference: 1e-4 relative, measured against the array's scale."""
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = np.abs(a - b)
    tol = rtol * np.abs(b) + 0.1 * rtol * np.abs(b).max()
    assert (err <= tol).all(), f"{what}: max diff {err.max():.3g}, scale {np.abs(b).max():.3g}"


def check_against_naive(kind, **kw):
    model = nc.Model(block_graph(kind, **kw), seed=0)
    randomise(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    model.zero_grad()
    gx = model.backward(gy)
    net, xv, yv = naive_forward(kind, model, x, **kw)
    grads = net.backward(yv, gy.astype(np.float64))
    assert y.dtype == gx.dtype == np.float32
    assert_close(y, yv.data, "output")
    assert_close(gx, xv.grad, "input gradient")
    assert set(grads) == set(model.grads)
    for key, g in grads.items():
        assert_close(model.grads[key], g, f"gradient {key}")
    return model, x


def check_model_gradients(model, x, points=3, seed=1):
    """End-to-end float64 finite-difference check of every parameter and the input."""
    rng = np.random.default_rng(seed)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape)
    model.zero_grad()
    gx = model.backward(gy)

    def loss():
        return float(np.sum(model.forward(x, training=True) * gy))

    targets = [("input", x, gx)] + [(k, model.params[k], model.grads[k].copy()) for k in model.params]
    for what, arr, analytic in targets:
        for j in rng.permutation(arr.size)[:points]:
            idx = np.unravel_index(int(j), arr.shape)
            fd = numeric_grad(loss, arr, idx, 1e-6)
            assert abs(analytic[idx] - fd) <= 1e-6 + 1e-5 * abs(fd), (what, idx, analytic[idx], fd)


# tests --------------------------------------------------------------------------------------
def test_inception_matches_naive_numpy_and_finite_differences():
    model, x = check_against_naive("inception", **INCEPTION)
    assert model.output_shape == (4 + 5 + 3 + 2, 6, 6)
    assert model.params["blk.conv3.weight"].shape == (5, 3, 3, 3)
    assert model.params["blk.pool_proj.bias"].shape == (2,)
    check_model_gradients(model.astype("float64"), x.astype(np.float64))


@pytest.mark.parametrize("case", list(RESIDUAL))
def test_residual_block_matches_naive_numpy_and_finite_differences(case):
    kind, kw, project = RESIDUAL[case]
    model, x = check_against_naive(kind, **kw)
    stride = kw.get("stride", 1)
    assert model.output_shape == (kw["out_channels"], 6 // stride, 6 // stride)
    assert ("blk.proj.weight" in model.params) == project
    assert ("blk.proj_bn.weight" in model.params) == project
    assert not any(k.endswith(".bias") and "bn" not in k for k in model.params), "convs are bias-free"
    assert {"blk.bn1.running_mean", "blk.bn1.running_var"} <= set(model.buffers)
    check_model_gradients(model.astype("float64"), x.astype(np.float64))


@pytest.mark.parametrize("case", ["inception", "bottleneck-identity", "bottleneck-projection-stride"])
def test_blocks_match_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    kind, kw = ("inception", INCEPTION) if case == "inception" else RESIDUAL[case][:2]
    model = nc.Model(block_graph(kind, **kw), seed=0)
    randomise(model)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    y = model.forward(x, training=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy)

    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()}
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)

    def conv(h, name, stride=1, padding=0):
        return F.conv2d(h, P[f"blk.{name}.weight"], P.get(f"blk.{name}.bias"), stride=stride, padding=padding)

    def bn(h, name):
        return F.batch_norm(h, None, None, P[f"blk.{name}.weight"], P[f"blk.{name}.bias"],
                            training=True, eps=BN_EPS)

    if kind == "inception":
        r = F.relu
        ty = torch.cat([r(conv(tx, "conv1")), r(conv(r(conv(tx, "conv3_reduce")), "conv3", padding=1)),
                        r(conv(r(conv(tx, "conv5_reduce")), "conv5", padding=2)),
                        r(conv(F.max_pool2d(tx, 3, 1, 1), "pool_proj"))], dim=1)
    else:
        stride = kw.get("stride", 1)
        h = F.relu(bn(conv(tx, "conv1"), "bn1"))
        h = F.relu(bn(conv(h, "conv2", stride, 1), "bn2"))
        h = bn(conv(h, "conv3"), "bn3")
        ty = F.relu(h + (bn(conv(tx, "proj", stride), "proj_bn") if "blk.proj.weight" in P else tx))
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    assert_close(y, ty.detach().numpy(), "output vs torch")
    assert_close(gx, tx.grad.numpy(), "input gradient vs torch")
    for key, p in P.items():
        assert_close(model.grads[key], p.grad.numpy(), f"gradient {key} vs torch")


def test_bottleneck_inference_uses_running_statistics():
    kind, kw, _ = RESIDUAL["bottleneck-projection-stride"]
    model = nc.Model(block_graph(kind, **kw), seed=0)
    randomise(model)
    x = np.random.default_rng(2).standard_normal(X_SHAPE).astype(np.float32)
    net = Naive(model.params)

    def bn(h, name):  # fresh running statistics: mean 0, variance 1
        g, b = net.leaves[f"{name}.weight"].data, net.leaves[f"{name}.bias"].data
        return V(g[None, :, None, None] * h.data / np.sqrt(1 + BN_EPS) + b[None, :, None, None])

    net.bn = bn
    y = naive_residual(net, V(x.astype(np.float64)), "blk", kind, 2, True)
    assert_close(model.forward(x, training=False), y.data, "inference output")


def test_block_names_are_scoped_and_unique_by_default():
    g = nc.Graph()
    x = g.input((8, 6, 6))
    a = nc.blocks.inception(g, x, **INCEPTION)
    b = nc.blocks.inception(g, a, **INCEPTION)
    c = nc.blocks.bottleneck(g, b, mid_channels=4, out_channels=16)
    d = nc.blocks.bottleneck(g, c, mid_channels=4, out_channels=16, name="b2")
    e = nc.blocks.basic_block(g, d, out_channels=16)
    assert (a.name, b.name) == ("inception_1.concat", "inception_2.concat")
    assert (c.name, d.name, e.name) == ("bottleneck_1.relu", "b2.relu", "basic_block_1.relu")
    model = nc.Model(g)
    assert "bottleneck_1.proj.weight" in model.params  # 14 -> 16 channels
    assert "b2.proj.weight" not in model.params and "b2.conv3.weight" in model.params
    assert "inception_2.conv5_reduce.weight" in model.params
    with pytest.raises(nc.GraphError, match="'b2.conv1' is used twice"):
        nc.blocks.bottleneck(g, e, mid_channels=4, out_channels=16, name="b2")


def test_block_arguments_are_validated():
    g = nc.Graph()
    x = g.input((8, 6, 6))
    with pytest.raises(ValueError, match="c3 must be a positive int, found 0"):
        nc.blocks.inception(g, x, c1=1, c3_reduce=1, c3=0, c5_reduce=1, c5=1, pool_proj=1)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        nc.blocks.bottleneck(g, x, mid_channels=4, out_channels=8, stride=0)
    with pytest.raises(nc.GraphError, match="expected a node of this graph"):
        nc.blocks.basic_block(g, "input", out_channels=8)


def test_block_on_an_input_it_cannot_take_names_the_block_node():
    g = nc.Graph()
    flat = g.flatten(g.input((8, 6, 6)))
    g.output(nc.blocks.inception(g, flat, **INCEPTION, name="inc3a"))
    with pytest.raises(nc.ShapeError, match=r"conv2d node 'inc3a\.conv1': .*\(288,\)"):
        nc.Model(g)


def test_concat_of_mismatched_spatial_sizes_names_block_node_and_shapes():
    g = nc.Graph()
    x = g.input((8, 6, 6))
    with g.scope("inc1"):  # a hand-made inception-like block whose 5x5 branch lost its padding
        a = g.conv2d(x, out_channels=4, kernel_size=3, padding=1, name="conv3")
        b = g.conv2d(x, out_channels=2, kernel_size=5, name="conv5")
        g.output(g.concat(a, b, name="concat"))
    with pytest.raises(nc.ShapeError, match=r"concat node 'inc1\.concat': .*\(4, 6, 6\) and \(2, 2, 2\)"):
        nc.Model(g)


def test_add_of_mismatched_shapes_names_block_node_and_shapes():
    g = nc.Graph()
    x = g.input((8, 6, 6))
    with g.scope("b2"):  # a hand-made residual block that strides but keeps an identity shortcut
        h = g.conv2d(x, out_channels=8, kernel_size=3, stride=2, padding=1, bias=False, name="conv1")
        g.output(g.add(h, x, name="add"))
    with pytest.raises(nc.ShapeError, match=r"add node 'b2\.add': .*\(8, 3, 3\) and \(8, 6, 6\)"):
        nc.Model(g)
