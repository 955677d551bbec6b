"""conv_transpose2d's CPU kernels on seeded random geometries, every array fenced (run_fenced): a
read past an array (input, weights, scratch) brings NaN into the results, a write past one
fails the run. Forward, input, weight and bias gradients are checked against per-tap NumPy
products (float64), and inference against the training forward."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.testing import run_fenced

ConvTranspose2d = nc.get_layer("conv_transpose2d")


def convt_ref(x, w, b, gy, layer):
    """y, gx, gw, gb by loops over groups and taps: tap (r, s) of input pixel (h, v) lands at
    (h*sh + r*dh, v*sw + s*dw) of the uncropped output, which is then cropped by the padding."""
    (R, S), (sh, sw), (dh, dw) = layer.kernel, layer.stride, layer.dilation
    (ph, pw), G = layer.padding, layer.groups
    N, C, H, W = x.shape
    Kg = w.shape[1]
    Cg = C // G
    P, Q = gy.shape[2:]
    # Uncropped output, big enough for every tap and for the output_padding rows.
    Hf, Wf = max((H - 1) * sh + dh * (R - 1) + 1, P + 2 * ph), max((W - 1) * sw + dw * (S - 1) + 1, Q + 2 * pw)
    full = np.zeros((N, G * Kg, Hf, Wf))
    gyf = np.zeros_like(full)
    gyf[:, :, ph:ph + P, pw:pw + Q] = gy
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for g in range(G):
        ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
        for r in range(R):
            for s in range(S):
                rows = slice(r * dh, r * dh + sh * (H - 1) + 1, sh)
                cols = slice(s * dw, s * dw + sw * (W - 1) + 1, sw)
                full[:, ks, rows, cols] += np.einsum("nchw,ck->nkhw", x[:, cs], w[cs, :, r, s])
                tap = gyf[:, ks, rows, cols]
                gx[:, cs] += np.einsum("nkhw,ck->nchw", tap, w[cs, :, r, s])
                gw[cs, :, r, s] += np.einsum("nchw,nkhw->ck", x[:, cs], tap)
    y = full[:, :, ph:ph + P, pw:pw + Q]
    if b is not None:
        y = y + b[None, :, None, None]
    return y, gx, gw, gy.sum(axis=(0, 2, 3))


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        R, S = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        G = int(rng.choice([1, 1, 2, 3]))
        C, K = G * int(rng.integers(1, 4)), G * int(rng.integers(1, 4))
        cfg = dict(out_channels=K, kernel_size=(R, S), stride=stride, padding=padding,
                   output_padding=output_padding, groups=G, dilation=dilation, bias=bool(rng.random() < 0.7))
        shape = (int(rng.integers(1, 4)), C, int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        try:
            ConvTranspose2d(**cfg).output_shape(shape[1:])
        except nc.ShapeError:
            continue
        out.append((cfg, shape))
    return out


GEOMETRIES = _geometries(30, seed=14)


def test_conv_transpose2d_random_geometries_cover_the_edges():
    layers = [(ConvTranspose2d(**c), s) for c, s in GEOMETRIES]
    assert any(max(l.output_padding) > 0 for l, _ in layers) and any(l.groups > 1 for l, _ in layers)
    assert any(l.stride[0] == 3 for l, _ in layers) and any(max(l.dilation) > 1 for l, _ in layers)
    assert any(l.output_shape(s[1:])[1:] == (1, 1) or min(l.output_shape(s[1:])[1:]) == 1 for l, s in layers)
    assert any(s[0] == 1 for _, s in GEOMETRIES) and any(s[0] == 3 for _, s in GEOMETRIES)
    # The CPU kernels' three column-matrix paths (_conv_columns): contiguous copies at column
    # stride 1; above it, phase planes where the output's phases are no wider than the input
    # (W >= ceil(Q / stride)), strided copies where they are wider.
    paths = {"stride 1" if l.stride[1] == 1 else "phases" if s[3] >= -(-l.output_shape(s[1:])[2] // l.stride[1])
             else "strided" for l, s in layers}
    assert paths == {"stride 1", "phases", "strided"}
    # float32's shifted-taps forward (groups 1, no dilation; its padded input within ``col``)
    from numbacnn.layers.conv_transpose2d_cpu import conv_transpose2d_scratch
    from numbacnn.layers.conv_transpose2d_shift_cpu import fits

    def takes(layer, shape):
        geo = (layer.groups, *layer.kernel, *layer.stride, *layer.dilation, *layer.padding)
        out = (shape[0], *layer.output_shape(shape[1:]))
        return fits(shape, out, geo, conv_transpose2d_scratch(shape, out, geo)["col"])

    taken = [takes(layer, s) for layer, s in layers]
    assert sum(taken) >= 6 and not all(taken)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{c}@{s}" for c, s in GEOMETRIES])
def test_conv_transpose2d_random_geometries_fenced(i):
    cfg, shape = GEOMETRIES[i]
    rng = np.random.default_rng(i)
    layer = ConvTranspose2d(**cfg)
    x = rng.standard_normal(shape)
    K, P, Q = layer.output_shape(shape[1:])
    gy = rng.standard_normal((shape[0], K, P, Q))
    run = run_fenced(layer, [x], gy, seed=int(rng.integers(1 << 30)))
    w, b = run.params["weight"], run.params.get("bias")
    y, gx, gw, gb = convt_ref(x, w, b, gy, layer)
    for what, got, want in (("forward", run.y, y), ("input gradient", run.gxs[0], gx),
                            ("weight gradient", run.grads["weight"], gw)) + (
            (("bias gradient", run.grads["bias"], gb),) if layer.bias else ()):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{what} of {layer!r} on {shape}")
    inference = run_fenced(layer, [x], None, run.params, training=False)
    np.testing.assert_allclose(inference.y, run.y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shift", [True, False], ids=["shift", "columns"])
@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{c}@{s}" for c, s in GEOMETRIES])
def test_conv_transpose2d_float32_forward_fenced(i, shift, monkeypatch):
    # float32 at groups 1 without dilation runs its forward on shifted taps
    # (conv_transpose2d_shift_cpu) where the machine's default takes them (SHIFT_FORWARD: AVX-512),
    # else on the columns: each forced, fenced, against the float64 reference.
    from numbacnn.layers import conv_transpose2d_cpu

    monkeypatch.setattr(conv_transpose2d_cpu, "SHIFT_FORWARD", shift)
    cfg, shape = GEOMETRIES[i]
    rng = np.random.default_rng(100 + i)
    layer = ConvTranspose2d(**cfg)
    x = rng.standard_normal(shape).astype(np.float32)
    run = run_fenced(layer, [x], None, training=False, seed=i)
    w, b = run.params["weight"], run.params.get("bias")
    y = convt_ref(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                  np.zeros(run.y.shape), layer)[0]
    np.testing.assert_allclose(run.y, y, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(y).max()))
