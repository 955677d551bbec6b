"""Parameters, gradients and optimizer state live in one flat array each, the per-key arrays
views into it: the optimizer updates every parameter in one kernel call, zero_grad is one fill.
These tests pin what users see: live views, assignment copying in, one launch per step, and
every update rule unchanged (a per-parameter NumPy reference written here)."""

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.optim import SGD, Adam, AdamW


def _model(seed=0, dtype="float32", fc=4):
    g = nc.Graph()
    x = g.input((1, 6, 6))
    y = g.conv2d(x, out_channels=3, kernel_size=3, name="conv")
    y = g.linear(g.flatten(g.relu(y)), out_features=fc, name="fc")
    g.output(y)
    return nc.Model(g, seed=seed, dtype=dtype)


def test_params_and_grads_are_views_of_one_flat_array():
    m = _model()
    flat = m.params.flat
    assert flat.size == m.param_count() and flat.dtype == np.float32
    for key, p in m.params.items():
        assert np.shares_memory(p, flat) and p.flags.c_contiguous
        assert np.shares_memory(m.grads[key], m.grads.flat)
    m.params["fc.bias"][...] = 7.0  # writable in place: the model and the flat array see it
    a, b, _ = m.params.layout.spans["fc.bias"]
    assert (flat[a:b] == 7.0).all()
    m.grads.flat[...] = 1.0
    m.zero_grad()
    assert not any(g.any() for g in m.grads.values())


def test_assigning_a_new_array_copies_it_into_the_live_parameter():
    m = _model()
    opt = SGD(m, lr=0.5)
    live = m.params["fc.bias"]
    m.params["fc.bias"] = np.arange(4, dtype=np.float64)  # cast to the model's dtype, in place
    assert m.params["fc.bias"] is live and live.dtype == np.float32
    np.testing.assert_array_equal(live, [0, 1, 2, 3])
    m.zero_grad()
    m.grads["fc.bias"] = np.ones(4)
    opt.step()  # the optimizer still updates the assigned values
    np.testing.assert_array_equal(m.params["fc.bias"], [-0.5, 0.5, 1.5, 2.5])
    with pytest.raises(ValueError, match=r"model.params\['fc.bias'\]: expected an array of shape \(4,\), found \(5,\)"):
        m.params["fc.bias"] = np.zeros(5)
    with pytest.raises(KeyError, match="no key 'fc.extra'; the keys are fixed"):
        m.params["fc.extra"] = np.zeros(4)
    with pytest.raises(TypeError, match="keys cannot be"):
        m.params.pop("fc.bias")
    with pytest.raises(TypeError, match="keys cannot be removed"):
        del m.grads["fc.bias"]


def test_a_replaced_params_dict_is_refused_by_the_optimizer():
    m = _model()
    opt = SGD(m, lr=0.1)
    m.params = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(TypeError, match="must be the model's own tables"):
        opt.step()


def _reference(name, kw, params, grads_per_step):
    """The per-parameter update rules (torch.optim's), in float64 NumPy, one array at a time."""
    lr, wd = kw["lr"], kw.get("weight_decay", 0.0)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    state = {k: {} for k in p}
    for t, grads in enumerate(grads_per_step, start=1):
        for k in p:
            g, s = grads[k].astype(np.float64), state[k]
            if name == "SGD":
                d = g + wd * p[k]
                if kw.get("momentum"):
                    s["buf"] = d.copy() if t == 1 else kw["momentum"] * s["buf"] + d
                    d = d + kw["momentum"] * s["buf"] if kw.get("nesterov") else s["buf"]
                p[k] = p[k] - lr * d
            else:
                b1, b2 = kw.get("betas", (0.9, 0.999))
                eps = kw.get("eps", 1e-8)
                if name == "AdamW":
                    p[k] = p[k] * (1 - lr * wd)
                    d = g
                else:
                    d = g + wd * p[k]
                s["m"] = b1 * s.get("m", 0) + (1 - b1) * d
                s["v"] = b2 * s.get("v", 0) + (1 - b2) * d * d
                mh, vh = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
                p[k] = p[k] - lr * mh / (np.sqrt(vh) + eps)
    return p


# fc 4: 226 parameters, updated in the calling thread; fc 1400: 68,630, past PARALLEL_MIN, split
# over Numba's threads (optim_cpu's two kernels).
@pytest.mark.parametrize("fc", [4, 1400])
@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("AdamW", dict(lr=0.01, weight_decay=0.05)),
])
def test_one_flat_update_matches_the_per_parameter_rules(name, kw, fc):
    from numbacnn._threads import PARALLEL_MIN

    m = _model(seed=3, dtype="float64", fc=fc)
    assert (m.param_count() >= PARALLEL_MIN) == (fc == 1400)
    start = {k: v.copy() for k, v in m.params.items()}
    opt = getattr(nc.optim, name)(m, **kw)
    rng = np.random.default_rng(1)
    steps = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(3)]
    for grads in steps:
        for k, g in grads.items():
            m.grads[k][...] = g
        opt.step()
    want = _reference(name, kw, start, steps)
    for k in start:
        np.testing.assert_allclose(m.params[k], want[k], rtol=1e-12, atol=1e-14)


def test_one_kernel_call_per_step_and_one_fill_per_zero_grad(monkeypatch):
    from numbacnn import _device_cpu, optim_cpu

    m = _model()
    calls = {"adam": 0, "fill": 0}
    real_adam, real_fill = optim_cpu.adam_update, _device_cpu.fill

    def adam(*a):
        calls["adam"] += 1
        return real_adam(*a)

    def fill(*a):
        calls["fill"] += 1
        return real_fill(*a)

    monkeypatch.setattr(optim_cpu, "adam_update", adam)
    opt = Adam(m)
    m.grads.flat[...] = 1.0
    opt.step()
    opt.step()
    assert calls["adam"] == 2  # 4 parameter arrays, one call per step
    backend = nc.device.get_backend("cpu")
    monkeypatch.setattr(backend, "_fill", fill)
    m.zero_grad()
    assert calls["fill"] == 1


def test_state_views_and_state_dict_keys_are_per_parameter():
    m = _model()
    opt = Adam(m)
    m.grads.flat[...] = 0.5
    opt.step()
    sd = opt.state_dict()
    keys = sorted(k for k in sd if k.startswith("state/"))
    assert keys == sorted(f"state/{k}/{n}" for k in m.params for n in ("exp_avg", "exp_avg_sq"))
    for k, p in m.params.items():
        assert sd[f"state/{k}/exp_avg"].shape == p.shape
        assert np.shares_memory(opt.state[k]["exp_avg"], opt._flat["exp_avg"])
    other = Adam(_model())
    partial = {k: v for k, v in sd.items() if not k.startswith("state/fc.bias/")}
    with pytest.raises(ValueError, match="has no entry for parameter\\(s\\) fc.bias"):
        other.load_state_dict(partial)
    other.load_state_dict(sd)
    for k in m.params:
        np.testing.assert_array_equal(other.state[k]["exp_avg_sq"], opt.state[k]["exp_avg_sq"])


def test_astype_and_load_state_keep_the_views_live():
    m = _model(seed=2)
    m64 = m.astype("float64")
    assert m64.params.flat.dtype == np.float64
    for k, p in m64.params.items():
        assert np.shares_memory(p, m64.params.flat)
        np.testing.assert_array_equal(p, m.params[k].astype(np.float64))
    fresh = _model(seed=9)
    views = dict(fresh.params)
    fresh.load_state(m.state())
    for k, v in views.items():
        assert fresh.params[k] is v
        np.testing.assert_array_equal(v, m.params[k])


@pytest.mark.cuda
def test_cuda_tables_move_as_one_flat_array_and_assignments_copy_in():
    m = _model()
    opt = SGD(m, lr=0.1, momentum=0.9)
    m.grads.flat[...] = 1.0
    opt.step()
    m.to("cuda")
    live = m.params["fc.bias"]
    m.params["fc.bias"] = np.full(4, 2.0)
    assert m.params["fc.bias"] is live
    np.testing.assert_array_equal(m.state()["params/fc.bias"], np.full(4, 2.0, np.float32))
    m.zero_grad()
    assert not m.grads.flat.copy_to_host().any()
    m.grads["fc.bias"] = np.ones(4)
    opt.step()  # momentum 0.9 of the first step's 1: buf = 1.9, p = 2 - 0.19
    np.testing.assert_allclose(m.state()["params/fc.bias"], np.full(4, 1.81), rtol=1e-6)
    m.to("cpu")
    assert np.shares_memory(m.params["conv.weight"], m.params.flat)
