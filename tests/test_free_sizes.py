"""Free spatial sizes: g.input((C, None, None)) takes any height and width.

One model, built once, runs at several sizes against PyTorch; parameters that would depend on
a free size are refused at nc.Model; summary, spec, save/load, the trainer and the input
checks all know about free sizes.
"""

import json

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.layer import POOL_SHAPES

SIZES = [(16, 16), (23, 17), (32, 32)]


def fcn_graph():
    """Fully convolutional: the three CPU conv paths (channel-major, pixel-major, Winograd),
    batch norm, a padded strided pool, a strided conv and a 1x1 head."""
    g = nc.Graph()
    x = g.input((3, None, None), name="x")
    h = g.relu(g.batch_norm2d(g.conv2d(x, out_channels=16, kernel_size=3, padding=1, name="c1"), name="bn"))
    h = g.max_pool2d(h, kernel_size=3, stride=2, padding=1, name="pool")
    h = g.relu(g.conv2d(h, out_channels=16, kernel_size=3, padding=1, name="wino"))  # Winograd: 16 -> 16, 3x3
    h = g.conv2d(h, out_channels=8, kernel_size=3, stride=2, padding=1, name="c2")
    h = g.conv2d(h, out_channels=6, kernel_size=3, padding=(1, 1, 0, 2), name="pix")  # pixel-major: 8 * 3 >= 16
    g.output(g.conv2d(g.relu(h), out_channels=4, kernel_size=1, name="head"))
    return g


def torch_fcn(torch, P, x):
    F = torch.nn.functional
    h = F.conv2d(x, P["c1.weight"], P["c1.bias"], padding=1)
    h = F.relu(F.batch_norm(h, None, None, P["bn.weight"], P["bn.bias"], training=True, eps=1e-5))
    h = F.max_pool2d(h, 3, 2, 1)
    h = F.relu(F.conv2d(h, P["wino.weight"], P["wino.bias"], padding=1))
    h = F.conv2d(h, P["c2.weight"], P["c2.bias"], stride=2, padding=1)
    h = F.conv2d(F.pad(h, (0, 2, 1, 1)), P["pix.weight"], P["pix.bias"])
    return F.conv2d(F.relu(h), P["head.weight"], P["head.bias"])


def test_one_fully_convolutional_model_runs_every_size_as_torch_does():
    torch = pytest.importorskip("torch")
    model = nc.Model(fcn_graph(), seed=0)
    assert model.input_shapes == [(3, None, None)] and model.output_shape == (4, None, None)
    rng = np.random.default_rng(0)
    for H, W in SIZES * 2:  # the second round replays each size's plan
        x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
        model.zero_grad()
        y = model.forward(x, training=True)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx = model.backward(gy)

        P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()}
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        ty = torch_fcn(torch, P, tx)
        ty.backward(torch.tensor(gy, dtype=torch.float64))
        assert y.shape == tuple(ty.shape), (H, W)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=f"output at {H}x{W}")
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=f"input gradient at {H}x{W}")
        for key, p in P.items():
            scale = max(1.0, float(p.grad.abs().max()))
            np.testing.assert_allclose(model.grads[key], p.grad.numpy(), rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{key} gradient at {H}x{W}")
        # inference (shared buffers, in-place ReLU, "bn" folded into "c1") agrees with the
        # training-mode graph up to the fold's rounding
        kept = model.forward(x, training=False, grad=True)
        np.testing.assert_allclose(model.forward(x), kept, rtol=0, atol=1e-5 * np.abs(kept).max())


def test_linear_after_flatten_fails_at_model_naming_the_node_and_the_fix():
    g = nc.Graph()
    h = g.max_pool2d(g.relu(g.conv2d(g.input((1, None, None)), out_channels=4, kernel_size=3)), kernel_size=2)
    g.output(g.linear(g.flatten(h), out_features=10, name="fc"))
    with pytest.raises(nc.ShapeError) as e:
        nc.Model(g)
    msg = str(e.value)
    assert msg.startswith("linear node 'fc': its parameters would depend on the free input size")
    assert "(?,)" in msg and "'weight'" in msg
    assert "put global_avg_pool2d, adaptive pooling or spp before flatten" in msg


def test_a_free_channel_count_is_refused_where_parameters_need_it():
    g = nc.Graph()
    g.output(g.conv2d(g.input((None, 8, 8)), out_channels=4, kernel_size=3, name="c"))
    with pytest.raises(nc.ShapeError, match=r"conv2d node 'c': its parameters would depend on the free "
                                            r"input size .* give the input a fixed channel count"):
        nc.Model(g)


def classifier_graph():
    g = nc.Graph()
    h = g.relu(g.conv2d(g.input((2, None, None)), out_channels=5, kernel_size=3, name="conv"))
    g.output(g.linear(g.global_avg_pool2d(h), out_features=3, name="fc"))
    return g


def test_global_pooling_makes_a_classifier_for_any_size():
    model = nc.Model(classifier_graph(), seed=0)
    assert model.output_shape == (3,)
    assert model.params["fc.weight"].shape == (3, 5)
    for H, W in [(3, 3), (9, 4), (40, 31)]:
        assert model.forward(np.ones((2, 2, H, W), np.float32)).shape == (2, 3)


def test_summary_shows_free_sizes_exact_params_and_flops_per_size():
    model = nc.Model(classifier_graph(), seed=0)
    text = model.summary()
    assert "(2, ?, ?)" in text and "(5, ?, ?)" in text
    assert f"{5 * 2 * 9 + 5 + 3 * 5 + 3:,}" in text.splitlines()[-2]  # params are exact
    assert "per size" in text and "summary(at=(C, H, W))" in text
    fc = next(line for line in text.splitlines() if line.startswith("fc "))
    assert fc.split()[-1] == f"{2 * 5 * 3 + 3:,}"  # the head's FLOPs do not depend on the size
    at = model.summary(at=(2, 10, 12))
    assert "FLOPs at (2, 10, 12)" in at
    conv = 2 * 5 * 8 * 10 * 2 * 9 + 5 * 8 * 10
    assert model.flops(at=(2, 10, 12)) == conv + 5 * 8 * 10 + 5 * 8 * 10 + 2 * 5 * 3 + 3  # + relu, pool, fc
    with pytest.raises(ValueError, match=r"flops depends on the input size .* flops\(at=\(2, 32, 32\)\)"):
        model.flops()
    assert model.shapes_at((2, 10, 12))["conv"] == (5, 8, 10)


def test_spec_save_and_load_keep_free_sizes(tmp_path):
    model = nc.Model(classifier_graph(), seed=0)
    spec = json.loads(json.dumps(model.to_spec()))
    assert spec["graph"]["nodes"][0]["config"]["shape"] == [2, None, None]
    again = nc.Model.from_spec(spec)
    assert again.input_shapes == [(2, None, None)]
    model.save(tmp_path / "m.npz")
    loaded = nc.Model.load(tmp_path / "m.npz")
    for H, W in [(5, 7), (12, 12)]:
        x = np.random.default_rng(H).standard_normal((3, 2, H, W)).astype(np.float32)
        np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_input_checks_take_any_free_size_and_name_what_is_wrong():
    model = nc.Model(classifier_graph(), seed=0)
    with pytest.raises(nc.GraphError, match=r"input 'input': expected shape \(N, 2, \?, \?\) \(\? is any size\), "
                                            r"found \(4, 3, 8, 8\)"):
        model.forward(np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(nc.GraphError, match=r"expected shape \(N, 2, \?, \?\).*found \(4, 2, 8\)"):
        model.forward(np.zeros((4, 2, 8), np.float32))
    # a size the layers cannot take fails at run time, naming the node
    with pytest.raises(nc.ShapeError, match=r"conv2d node 'conv': input 2x5 .* smaller than the kernel"):
        model.forward(np.zeros((1, 2, 2, 5), np.float32))
    with pytest.raises(TypeError, match="expected float32 data, found float64"):
        model.forward(np.zeros((1, 2, 8, 8)))


def test_trainer_fits_predicts_and_evaluates_at_any_size():
    model = nc.Model(classifier_graph(), seed=0)
    trainer = nc.Trainer(model, nc.optim.SGD(model, lr=0.1), loss="cross_entropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 2, 9, 7)).astype(np.float32), rng.integers(0, 3, 12)
    trainer.fit(x, y, epochs=1, batch_size=4, verbose=False)
    assert trainer.predict(rng.standard_normal((5, 2, 6, 6)).astype(np.float32)).shape == (5, 3)
    assert trainer.predict(np.zeros((0, 2, 6, 6), np.float32)).shape == (0, 3)
    assert set(trainer.evaluate(x, y)) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match=r"fit: x must be \(N, 2, \?, \?\) \(\? is any size\), found \(12, 3, 9, 7\)"):
        trainer.fit(np.zeros((12, 3, 9, 7), np.float32), y, verbose=False)
    with pytest.raises(ValueError, match=r"predict: x must be an array \(N, 2, \?, \?\)"):
        trainer.predict(np.zeros((2, 2, 9), np.float32))


def test_shapes_and_buffers_are_kept_for_a_few_sizes_only():
    model = nc.Model(classifier_graph(), seed=0)
    sizes = [(4 + k, 4 + 2 * k) for k in range(3 * POOL_SHAPES)]
    for H, W in sizes:
        model.forward(np.ones((2, 2, H, W), np.float32))
        model.forward(np.ones((2, 2, H, W), np.float32), training=True)
        model.backward(np.ones((2, 3), np.float32))
    ex = model._executor
    state = ex.thread_pass()
    assert len(state.plans) == POOL_SHAPES and len(ex._plans) == POOL_SHAPES
    # the arena keeps only what the remembered sizes use, not what all twelve once took
    need = [model.memory_plan(2, at=(2, H, W))["arena_bytes"] for H, W in sizes]
    assert state.arena.allocated_bytes <= POOL_SHAPES * max(need) < sum(need)
    used = set().union(*(plan.bases for plan in state.plans.values()))
    assert {id(b) for b in state.arena._bases} <= used


def test_probes_fall_back_to_larger_sizes_for_deep_graphs():
    g = nc.Graph()
    h = g.input((1, None, None))
    for i in range(7):  # a 128x reduction: the first probe sizes are too small for it
        h = g.max_pool2d(h, kernel_size=2, name=f"p{i}")
    g.output(h)
    model = nc.Model(g)
    assert model.output_shape == (1, None, None)
    assert model.forward(np.ones((1, 1, 130, 260), np.float32)).shape == (1, 1, 1, 2)


def test_blocks_take_free_sizes_through_the_graphs_shape_inference():
    g = nc.Graph()
    x = g.input((8, None, None))
    h = nc.blocks.bottleneck(g, x, mid_channels=4, out_channels=16, stride=2, name="b1")
    assert nc.blocks.node_shape(g, h) == g.shapes()[h.name] == (16, None, None)
    g.output(nc.blocks.inception(g, h, c1=2, c3_reduce=2, c3=2, c5_reduce=2, c5=2, pool_proj=2, name="inc"))
    model = nc.Model(g, seed=0)
    assert model.forward(np.ones((2, 8, 9, 14), np.float32)).shape == (2, 8, 5, 7)
    g2 = nc.Graph()
    with pytest.raises(nc.ShapeError, match=r"bottleneck: expected an input of shape \(C, H, W\) with a fixed C"):
        nc.blocks.bottleneck(g2, g2.input((None, None, None)), mid_channels=4, out_channels=16)


@pytest.mark.cuda
def test_free_sizes_on_cuda_match_the_cpu():
    cpu = nc.Model(classifier_graph(), seed=0)
    gpu = nc.Model(classifier_graph(), seed=0).to("cuda")
    rng = np.random.default_rng(0)
    for H, W in [(4, 5), (6, 3), (4, 5)]:
        x = rng.standard_normal((2, 2, H, W)).astype(np.float32)
        np.testing.assert_allclose(gpu.forward(x), cpu.forward(x), rtol=1e-5, atol=1e-6)
        gy = rng.standard_normal((2, 3)).astype(np.float32)
        cpu.forward(x, training=True)
        gpu.forward(x, training=True)
        np.testing.assert_allclose(gpu.backward(gy), cpu.backward(gy), rtol=1e-5, atol=1e-6)
