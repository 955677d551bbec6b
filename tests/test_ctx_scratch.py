"""Ctx.scratch: per-call scratch that a training step's nodes share through one Workspace."""

import numpy as np
import numbacnn as nc
from numbacnn.device import ALIGN, get_backend
from numbacnn.layer import Ctx, Workspace


def _ctxs(n: int) -> tuple[Workspace, list[Ctx]]:
    backend = get_backend("cpu")
    ws = Workspace(backend)
    rng = np.random.default_rng(0)
    return ws, [Ctx(f"n{i}", "cpu", np.float32, backend, rng, workspace=ws) for i in range(n)]


def test_scratch_is_shared_between_nodes_and_disjoint_within_a_call():
    ws, (a, b) = _ctxs(2)
    pools: list = [([], {}), ([], {})]
    for _ in range(2):  # the first round grows the workspace to the largest call
        a.begin(True, True, *pools[0])
        a1, a2 = a.scratch((3, 5)), a.scratch((7,), "int64")
        assert (a1.shape, a1.dtype, a2.shape, a2.dtype) == ((3, 5), np.float32, (7,), np.int64)
        assert not np.shares_memory(a1, a2)  # live together inside one call
        b.begin(True, True, *pools[1])
        b1 = b.scratch((3, 5))
    # a's call: 60 bytes rounded up to 64, then 56; and 64 bytes of slack, so that offset 0 can
    # sit on the buffer's first 64-byte line (device.ALIGN), where every view is laid out from
    assert ws.nbytes == 64 + 7 * 8 + ALIGN
    assert a1.ctypes.data % ALIGN == 0 and a2.ctypes.data % ALIGN == 0
    assert np.shares_memory(a1, b1)  # another node's call reuses the same bytes
    assert a1.base is ws.buf and b1.base is ws.buf
    assert a.empty((3, 5)).base is not ws.buf  # what ``empty`` gives is the node's own


def test_replay_gives_the_same_arrays_and_backward_starts_over():
    ws, (a,) = _ctxs(1)
    pool: list = []
    plans: dict = {}
    calls = []
    for _ in range(3):  # the first call grows the workspace; the later ones replay
        a.begin(True, True, pool, plans)
        forward = (a.scratch((4, 4)), a.scratch((2,)))
        a.begin_backward((True,))
        calls.append((*forward, a.scratch((4, 4))))
    f1, f2, back = calls[1]
    assert calls[2][0] is f1 and calls[2][1] is f2 and calls[2][2] is back
    assert np.shares_memory(back, f1) and back is not f1  # backward lays out from the start again
    assert not np.shares_memory(f1, f2)


def test_growing_the_workspace_refreshes_every_nodes_views():
    ws, (a, b) = _ctxs(2)
    pa: dict = {}
    a.begin(True, True, [], pa)
    small = a.scratch((8,))
    old = ws.buf
    b.begin(True, True)
    big = b.scratch((10_000,))
    assert ws.buf is not old and big.base is ws.buf and ws.nbytes == 40_000 + ALIGN and big.ctypes.data % ALIGN == 0
    a.begin(True, True, [], pa)
    fresh = a.scratch((8,))
    assert fresh is not small and fresh.base is ws.buf  # no view keeps the old buffer alive


def test_without_a_workspace_scratch_is_empty():
    ctx = Ctx("n", "cpu", np.float32, get_backend("cpu"), np.random.default_rng(0))
    pool: list = []
    ctx.begin(True, True, pool, {})
    s = ctx.scratch((3, 2))
    assert pool == [s] and s.shape == (3, 2) and s.dtype == np.float32


def _net(seed: int) -> nc.Model:
    # Every CPU conv2d path and the other users of ctx.scratch, in one model.
    g = nc.Graph()
    x = g.input((3, 12, 12))
    h = g.relu(g.conv2d(x, out_channels=8, kernel_size=3, padding=1))  # im2col (few channels)
    h = g.relu(g.conv2d(h, out_channels=16, kernel_size=3, padding=1))  # pixel-major
    h = g.relu(g.conv2d(h, out_channels=16, kernel_size=3, padding=1))  # Winograd
    h = g.conv2d(h, out_channels=16, kernel_size=1)  # im2col, direct 1x1
    h = g.conv2d(h, out_channels=8, kernel_size=3, stride=2, padding=1)  # im2col, strided
    h = g.conv_transpose2d(h, out_channels=4, kernel_size=4, stride=2, padding=1)
    g.output(g.linear(g.flatten(g.global_avg_pool2d(h)), out_features=3))
    return nc.Model(g, seed=seed)


def _paths(model: nc.Model) -> set[str]:
    return {plan.path for ctx in model._executor.ctxs.values() for plan in ctx._plans.values()
            if hasattr(plan, "path")}


def test_training_with_a_shared_workspace_matches_one_without_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    gy = rng.standard_normal((4, 3)).astype(np.float32)
    shared, alone = _net(0), _net(0)
    for ctx in alone._executor.ctxs.values():
        ctx._workspace = None
    ws = next(iter(shared._executor.ctxs.values()))._workspace
    for step in range(2):  # the first grows the workspace, the second replays
        if ws.buf is not None:
            ws.buf.fill(0xFF)  # NaN in every float: a kernel reading scratch it did not write shows it
        y = shared.forward(x, training=True)
        ws.buf.fill(0xFF)
        gx = shared.backward(gy)
        y0 = alone.forward(x, training=True)
        gx0 = alone.backward(gy)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(gx, gx0)
        for key in shared.grads:
            np.testing.assert_array_equal(shared.grads[key], alone.grads[key], err_msg=key)
    assert _paths(shared) >= {"im2col", "pixel", "winograd"}
    assert ws.nbytes > 0 and all(ctx._workspace is None for ctx in alone._executor.ctxs.values())


def _training_bytes(model: nc.Model) -> int:
    # Every distinct buffer a training step's contexts hold, and the shared workspace.
    ex = model._executor
    bases = {}
    for plan in ex._plans.values():
        for pool in plan.pools:
            for buf in pool:
                base = buf if buf.base is None else buf.base
                bases[id(base)] = base.nbytes
    ws = next(iter(ex.ctxs.values()))._workspace
    return sum(bases.values()) + (ws.nbytes if ws is not None else 0)


def test_vgg_small_training_step_holds_less_with_the_shared_workspace():
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    held = {}
    for shared in (True, False):
        model = nc.zoo.vgg_small(seed=0)
        if not shared:
            for ctx in model._executor.ctxs.values():
                ctx._workspace = None
        model.forward(x, training=True)
        model.backward(np.ones((2, 10), np.float32))
        held[shared] = _training_bytes(model)
    # Measured at batch 2: 21.2 MB against 33.2 MB (every convolution's column matrices,
    # Winograd tiles and partial weight gradients, held once instead of per node).
    assert held[True] < 0.9 * held[False], held


def test_inference_contexts_have_no_workspace():
    model = _net(0)
    model.forward(np.zeros((1, 3, 12, 12), np.float32))
    assert all(ctx._workspace is None for ctx in model._executor.thread_pass().ctxs.values())
