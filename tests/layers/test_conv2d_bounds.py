"""conv2d's CPU paths on seeded random geometries, every array fenced (run_fenced): a read past
an array (input, weights, scratch) brings NaN into the results, a write past one fails the run.

Each geometry runs down the path the layer picks, then forced down the pixel-major and the
Winograd paths where they apply (as test_conv2d.py forces them), sometimes with blocks of a
few pixels or tile rows so the block edges are crossed. Forward, input, weight and bias
gradients are checked against per-tap NumPy loops (float64), and inference (one padded image
per chunk of the batch instead of per sample; at batch 1 each sample's columns split over the
threads) against the training forward.
"""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _passes
from numbacnn.layers import _conv_columns, conv2d_cpu, conv2d_pixel_cpu, conv2d_winograd_cpu
from numbacnn.testing import run_fenced

Conv2d = nc.get_layer("conv2d")


def _pads(padding, R, S, dh, dw):
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dh * (R - 1), dw * (S - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def conv_ref(x, w, b, gy, cfg):
    """y, gx, gw, gb of conv2d by loops over groups and kernel taps, each tap a product of
    strided slices of the zero-padded input (float64)."""
    R, S = cfg["kernel_size"]
    (sh, sw), (dh, dw), G = cfg["stride"], cfg["dilation"], cfg["groups"]
    pt, pb, pl, pr = _pads(cfg["padding"], R, S, dh, dw)
    N, C, H, W = x.shape
    K, Cg = w.shape[:2]
    Kg = K // G
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    P, Q = gy.shape[2:]
    y = np.zeros((N, K, P, Q))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for g in range(G):
        ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
        for r in range(R):
            for s in range(S):
                rows = slice(r * dh, r * dh + sh * (P - 1) + 1, sh)
                cols = slice(s * dw, s * dw + sw * (Q - 1) + 1, sw)
                tap = xp[:, cs, rows, cols]
                y[:, ks] += np.einsum("ncpq,kc->nkpq", tap, w[ks, :, r, s])
                gxp[:, cs, rows, cols] += np.einsum("nkpq,kc->ncpq", gy[:, ks], w[ks, :, r, s])
                gw[ks, :, r, s] += np.einsum("nkpq,ncpq->kc", gy[:, ks], tap)
    if b is not None:
        y += b[None, :, None, None]
    return y, gxp[:, :, pt:pt + H, pl:pl + W], gw, gy.sum(axis=(0, 2, 3))


def test_valid_ranges_stay_inside_the_row():
    # Regression: with a tap left of the input for every output (padding 2, one output,
    # kernel 3), valid gave lo = 2 > n_out = 1, and im2col zero-filled q in range(lo): one
    # element past the row (masked only because the next row was written afterwards).
    rng = np.random.default_rng(0)
    cases = [(1, 1, 1, -2), (3, 2, 2, -9), (2, 5, 1, 7)] + [
        (int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.integers(-9, 9)))
        for _ in range(200)]
    for n_out, size, stride, offset in cases:
        lo, hi = _conv_columns.valid(n_out, size, stride, offset)
        assert 0 <= lo <= hi <= n_out, (n_out, size, stride, offset, lo, hi)
        inside = [i for i in range(n_out) if 0 <= i * stride + offset < size]
        assert list(range(lo, hi)) == inside, (n_out, size, stride, offset, lo, hi)


def test_im2col_rows_writes_its_rows_of_im2col_and_nothing_else():
    # One thread's share of a split sample: the columns of output rows [pa, pb) as im2col has
    # them, every other entry untouched (NaN here), on random geometries and row ranges.
    rng = np.random.default_rng(3)
    for _ in range(60):
        cfg, shape = _geometries(1, int(rng.integers(1 << 30)))[0]
        layer = Conv2d(**cfg)
        C, H, W = shape[1:]
        _, P, Q = layer.output_shape(shape[1:])
        geo = layer._geometry()
        xn = rng.standard_normal((C, H, W))
        rows = C * geo[1] * geo[2]
        whole = np.full(rows * P * Q, np.nan)
        _conv_columns.im2col(xn, whole, P, Q, geo)
        pa = int(rng.integers(0, P + 1))
        pb = int(rng.integers(pa, P + 1))
        part = np.full(rows * P * Q, np.nan)
        _conv_columns.im2col_rows(xn, part, P, Q, geo, pa, pb)
        want = np.full((rows, P * Q), np.nan)
        want[:, pa * Q:pb * Q] = whole.reshape(rows, P * Q)[:, pa * Q:pb * Q]
        np.testing.assert_array_equal(part.reshape(rows, P * Q), want, err_msg=f"{cfg} {shape} rows [{pa}, {pb})")
        assert not np.isnan(whole).any()



def _columns_ref(xn, P, Q, geo):
    """The column matrix by its definition, entry by entry: row (c, r, s), column (p, q) is
    xn[c, p*sh + r*dh - pt, q*sw + s*dw - pl], or 0 outside the image."""
    _, R, S, sh, sw, dh, dw, pt, pl = geo
    C, H, W = xn.shape
    out = np.zeros((C, R, S, P, Q))
    for r in range(R):
        for s in range(S):
            for p in range(P):
                for q in range(Q):
                    h, w = p * sh + r * dh - pt, q * sw + s * dw - pl
                    if 0 <= h < H and 0 <= w < W:
                        out[:, r, s, p, q] = xn[:, h, w]
    return out.reshape(C * R * S, P * Q)


def test_im2col_flat_copies_match_the_definition_fenced():
    # Stride 1 with as many output columns as input columns ("same" width, any height padding,
    # dilation): each tap's rows are one flat copy from x, whose entries between rows (and past
    # the image, clipped) are then zeroed (_conv_columns.im2col_flat). x sits between NaN fences
    # (a read past it brings NaN in); cf starts NaN (an entry left unwritten shows).
    rng = np.random.default_rng(7)
    for _ in range(150):
        R, S, dh, dw = (int(v) for v in rng.integers(1, 6, 2).tolist() + rng.integers(1, 3, 2).tolist())
        pl = int(rng.integers(0, dw * (S - 1) + 1))
        pt, pb = int(rng.integers(0, 4)), int(rng.integers(0, 4))
        C, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        P = H + pt + pb - dh * (R - 1)
        if P < 1:
            continue
        geo = (1, R, S, 1, 1, dh, dw, pt, pl)
        fenced = np.full(C * H * W + 40, np.nan)
        xn = fenced[20:20 + C * H * W].reshape(C, H, W)
        xn[:] = rng.standard_normal((C, H, W))
        cf = np.full(C * R * S * P * W, np.nan)
        _conv_columns.im2col_flat(xn, cf, P, W, geo)
        np.testing.assert_array_equal(cf.reshape(C * R * S, P * W), _columns_ref(xn, P, W, geo),
                                      err_msg=f"{geo} {(C, H, W)}")


def _geometries(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        R, S = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        stride = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        family = rng.choice(["any", "winograd", "direct"], p=[0.6, 0.3, 0.1])
        if family == "winograd":  # a geometry the Winograd path takes: up to 6x6, stride 1
            R, S, stride, dilation = int(rng.integers(2, 7)), int(rng.integers(2, 7)), (1, 1), (1, 1)
        if family == "direct":  # 1x1, stride 1, unpadded: no column matrix at all
            R, S, stride = 1, 1, (1, 1)
        kind = 0 if family == "direct" else rng.integers(0, 5)
        padding = ["valid", "same" if stride == (1, 1) else 1, int(rng.integers(0, 3)),
                   (int(rng.integers(0, 3)), int(rng.integers(0, 3))),
                   tuple(int(v) for v in rng.integers(0, 4, 4))][kind]
        G = 1 if family == "winograd" else int(rng.choice([1, 1, 1, 2, 3]))
        C = G * int(rng.integers(1, 4)) if rng.random() < 0.85 else 17  # 17: a 16-channel lane and one more
        K = G * int(rng.integers(1, 4)) if C != 17 else 18
        cfg = dict(out_channels=K, kernel_size=(R, S), stride=stride, padding=padding, dilation=dilation, groups=G,
                   bias=bool(rng.random() < 0.7))
        shape = (int(rng.integers(1, 4)), C, int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        try:
            Conv2d(**cfg).output_shape(shape[1:])
        except (nc.ShapeError, ValueError):
            continue
        out.append((cfg, shape))
    return out


GEOMETRIES = _geometries(40, seed=12)


def _direct(layer):
    # 1x1, stride 1, unpadded: x is its own column matrix, and the pixel-major path does not apply.
    return layer.kernel == (1, 1) and layer.stride == (1, 1) and layer.pads == (0, 0, 0, 0)


def _paths(layer, shape):
    """The paths this geometry can take besides the layer's pick (forced as test_conv2d does)."""
    paths = ["default"]
    if layer.groups == 1 and not _direct(layer):
        paths.append("pixel-major")
    if (layer.groups == 1 and layer.stride == (1, 1) and layer.dilation == (1, 1)
            and 2 <= min(layer.kernel) and max(layer.kernel) <= 6):
        paths.append("winograd")
    paths.append("shift")  # conv2d_shift_cpu: any groups, stride, padding and dilation
    if "pixel-major" in paths:
        paths.append("shift-pixel")  # shifted taps, then pixel-major making its own images (few channels)
    return paths


def test_conv2d_random_geometries_cover_every_path_and_the_edges():
    paths = [p for cfg, shape in GEOMETRIES for p in _paths(Conv2d(**cfg), shape)]
    assert paths.count("pixel-major") >= 15 and paths.count("winograd") >= 10 and paths.count("shift") >= 15
    assert paths.count("shift-pixel") == paths.count("pixel-major")
    assert any(_direct(Conv2d(**c)) for c, _ in GEOMETRIES)
    assert any(c["groups"] > 1 for c, _ in GEOMETRIES) and any(s[1] == 17 for _, s in GEOMETRIES)
    assert any(len(c["padding"]) == 4 for c, _ in GEOMETRIES if isinstance(c["padding"], tuple))
    assert any(c["padding"] == "same" for c, _ in GEOMETRIES)
    assert any(Conv2d(**c).output_shape(s[1:])[1:] == (1, 1) for c, s in GEOMETRIES)
    assert any(s[0] == 1 for _, s in GEOMETRIES) and any(s[0] == 3 for _, s in GEOMETRIES)


def _check(layer, shape, rng):
    x = rng.standard_normal(shape)
    K, P, Q = layer.output_shape(shape[1:])
    gy = rng.standard_normal((shape[0], K, P, Q))
    run = run_fenced(layer, [x], gy, seed=int(rng.integers(1 << 30)))
    w, b = run.params["weight"], run.params.get("bias")
    y, gx, gw, gb = conv_ref(x, w, b, gy, layer.config | {"kernel_size": layer.kernel, "stride": layer.stride,
                                                          "dilation": layer.dilation})
    for what, got, want in (("forward", run.y, y), ("input gradient", run.gxs[0], gx),
                            ("weight gradient", run.grads["weight"], gw)) + (
            (("bias gradient", run.grads["bias"], gb),) if layer.bias else ()):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{what} of {layer!r} on {shape}")
    inference = run_fenced(layer, [x], None, run.params, training=False)
    np.testing.assert_allclose(inference.y, run.y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i", range(len(GEOMETRIES)), ids=[f"{c}@{s}" for c, s in GEOMETRIES])
def test_conv2d_random_geometries_fenced(i, monkeypatch):
    cfg, shape = GEOMETRIES[i]
    rng = np.random.default_rng(i)
    layer = Conv2d(**cfg)
    for path in _paths(layer, shape):
        with monkeypatch.context() as mp:
            # Inference below the thread count splits each sample's columns (any size here;
            # a batch-1 model of small values otherwise runs on one thread: no split)
            mp.setattr(conv2d_cpu, "SPLIT_MIN_MACS", 0)
            mp.setattr(_passes, "PARALLEL_MIN", 0)
            if path == "pixel-major":
                mp.setenv("NUMBACNN_CONV2D_PATH", "pixel")
                if rng.random() < 0.5:  # blocks of a few output pixels: block edges mid-row
                    mp.setattr(conv2d_pixel_cpu, "_BLOCK_ELEMENTS", int(rng.integers(1, 4)) * shape[1] * np.prod(cfg["kernel_size"]))
            elif path == "shift":
                mp.setenv("NUMBACNN_CONV2D_PATH", "shift")
            elif path == "shift-pixel":  # forced shifted taps, with the backward auto would give few channels
                mp.setenv("NUMBACNN_CONV2D_PATH", "shift")
                mp.setattr(conv2d_cpu, "requested", lambda: "auto")
                mp.setattr(conv2d_cpu, "pixel_major", lambda *shapes: True)
                if rng.random() < 0.5:
                    few = int(rng.integers(1, 4)) * shape[1] * np.prod(cfg["kernel_size"])
                    mp.setattr(conv2d_pixel_cpu, "_BLOCK_ELEMENTS", few)
            elif path == "winograd":
                mp.setenv("NUMBACNN_CONV2D_PATH", "winograd")
                if rng.random() < 0.5:  # blocks of one tile row
                    mp.setattr(conv2d_winograd_cpu, "_BLOCK_ELEMENTS", 1)
            _check(layer, shape, rng)


def test_shift_phase_planes_match_the_definition_fenced():
    # conv2d_shift_cpu._pad: plane (c, a, b), entry (i, j), is the padded image's (i*sh + a,
    # j*sw + b), 0 outside x, at strides 1 to 3 (every other trial a column stride of 2),
    # whatever the parity of the left padding, x's width and the planes' width (narrower than
    # the padded image at 1x1 stride 2). x sits between NaN fences (a read past it brings NaN
    # in); xpf starts NaN with fences of its own (an entry left unwritten, or written past the
    # planes, shows).
    from numbacnn.layers import conv2d_shift_cpu

    rng = np.random.default_rng(11)
    for trial in range(200):
        sh, sw = int(rng.integers(1, 4)), (2 if trial % 2 else int(rng.integers(1, 4)))
        C, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 18))
        pt, pl = int(rng.integers(0, 4)), int(rng.integers(0, 4))
        Hp = int(rng.integers(1, (H + 2 * pt) // sh + 3))
        Wp = int(rng.integers(1, (W + 2 * pl) // sw + 3))
        fenced = np.full(C * H * W + 40, np.nan, np.float32)
        xn = fenced[20:20 + C * H * W].reshape(C, H, W)
        xn[:] = rng.standard_normal((C, H, W))
        planes = np.full(C * sh * sw * Hp * Wp + 40, np.nan, np.float32)
        conv2d_shift_cpu._pad(xn, planes[20:-20], pt, pl, Hp, Wp, sh, sw)
        want = np.zeros((C, sh, sw, Hp, Wp), np.float32)
        for a in range(sh):
            for b in range(sw):
                for i in range(Hp):
                    for j in range(Wp):
                        h, w = i * sh + a - pt, j * sw + b - pl
                        if 0 <= h < H and 0 <= w < W:
                            want[:, a, b, i, j] = xn[:, h, w]
        assert np.isnan(planes[:20]).all() and np.isnan(planes[-20:]).all()
        np.testing.assert_array_equal(planes[20:-20].reshape(want.shape), want,
                                      err_msg=f"stride {sh}x{sw}, pad {pt},{pl}, x {C}x{H}x{W}, planes {Hp}x{Wp}")


def test_tap_offsets_of_no_channels_write_nothing():
    # _offsets fills a tap's offsets once per (r, s) and adds each channel's span; with no
    # channels its array is empty and nothing may be written (under NUMBA_BOUNDSCHECK, CI's
    # second pass, a write raises IndexError)
    from numbacnn.layers import conv2d_shift_cpu

    offs = np.empty(0, np.int64)
    conv2d_shift_cpu._offsets(offs, 0, 3, 3, 10, 10, 1, 1, 1, 1)
    offs = np.empty(2 * 9, np.int64)
    conv2d_shift_cpu._offsets(offs, 2, 3, 3, 10, 10, 1, 1, 1, 1)
    want = [c * 100 + r * 10 + s for c in range(2) for r in range(3) for s in range(3)]
    np.testing.assert_array_equal(offs, want)
