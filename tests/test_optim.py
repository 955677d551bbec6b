import math

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.optim import SGD, Adam, AdamW, ConstantLR, CosineAnnealingLR, StepLR


def _model(seed=0):
    g = nc.Graph()
    x = g.input((4,))
    g.output(g.linear(x, out_features=3, name="fc"))
    return nc.Model(g, seed=seed)


def _set(model, w, gw, b=None, gb=None):
    model.params["fc.weight"][...] = w
    model.grads["fc.weight"][...] = gw
    model.params["fc.bias"][...] = 0 if b is None else b
    model.grads["fc.bias"][...] = 0 if gb is None else gb


def _first(model):
    return model.params["fc.weight"].reshape(-1)[:2].astype(np.float64)


def _worked(opt_factory, grads_per_step):
    """Params start at [1, -2, 0, ...]; the given gradients for the first two elements."""
    m = _model()
    opt = opt_factory(m)
    for g in grads_per_step:
        w = m.params["fc.weight"].copy()
        gw = np.zeros_like(w)
        gw.reshape(-1)[:2] = g
        if opt.steps == 0:
            w[...] = 0
            w.reshape(-1)[:2] = (1.0, -2.0)
        _set(m, w, gw, m.params["fc.bias"].copy())
        opt.step()
    return _first(m)


# Hand-worked expectations (torch.optim semantics), each step written out in the comment.
def test_sgd_momentum_weight_decay_worked_example():
    # step 1: d = g + 0.01 p = [0.51, 0.08]; buf = d; p = p - 0.1 buf = [0.949, -2.008]
    # step 2: d = [0.5 + 0.00949, 0.1 - 0.02008] = [0.50949, 0.07992]
    #         buf = 0.9 [0.51, 0.08] + d = [0.96849, 0.15192]; p = [0.852151, -2.023192]
    got = _worked(lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01), [(0.5, 0.1), (0.5, 0.1)])
    np.testing.assert_allclose(got, [0.852151, -2.023192], rtol=1e-6)


def test_sgd_plain_and_nesterov_worked_example():
    # plain: p = [1 - 0.1 * 0.5, -2 - 0.1 * 0.1] = [0.95, -2.01]
    np.testing.assert_allclose(_worked(lambda m: SGD(m, lr=0.1), [(0.5, 0.1)]), [0.95, -2.01], rtol=1e-6)
    # nesterov step 1: buf = d = g; d' = g + 0.9 buf = 1.9 g = [0.95, 0.19]; p = [0.905, -2.019]
    # step 2: buf = 0.9 [0.5, 0.1] + [0.5, 0.1] = [0.95, 0.19]; d' = g + 0.9 buf = [1.355, 0.271]
    #         p = [0.905 - 0.1355, -2.019 - 0.0271] = [0.7695, -2.0461]
    got = _worked(lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True), [(0.5, 0.1), (0.5, 0.1)])
    np.testing.assert_allclose(got, [0.7695, -2.0461], rtol=1e-6)


def test_adam_worked_example():
    # step 1, g = 0.5: m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25 -> p = 1 - 0.1 * 0.5 / 0.5 = 0.9
    # step 2, g = -0.25: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225
    #   m^ = 0.02 / 0.19 = 0.10526316, v^ = 0.00031225 / 0.001999 = 0.15620310, sqrt = 0.39522538
    #   p = 0.9 - 0.1 * 0.10526316 / 0.39522538 = 0.87336630 (float32 arithmetic: within 5e-6)
    got = _worked(lambda m: Adam(m, lr=0.1), [(0.5, 0.0), (-0.25, 0.0)])
    np.testing.assert_allclose(got[0], 0.87336630, rtol=5e-6)
    assert got[1] == -2.0  # a zero gradient leaves a parameter where it is


def test_adamw_decoupled_vs_adam_l2_worked_example():
    # AdamW: p = 1 * (1 - 0.1 * 0.1) = 0.99, then the first Adam step moves by lr: 0.89
    got = _worked(lambda m: AdamW(m, lr=0.1, weight_decay=0.1), [(0.5, 0.0)])
    np.testing.assert_allclose(got[0], 0.89, rtol=1e-6)
    # Adam's L2 adds 0.1 * p to the gradient of the second element, which then moves by lr:
    # g = 0 + 0.1 * -2 = -0.2 -> p = -2 + 0.1 = -1.9
    got = _worked(lambda m: Adam(m, lr=0.1, weight_decay=0.1), [(0.5, 0.0)])
    np.testing.assert_allclose(got, [0.9, -1.9], rtol=1e-6)


@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("AdamW", dict(lr=0.01, weight_decay=0.05)),
])
def test_matches_torch_over_several_steps(name, kw):
    torch = pytest.importorskip("torch")
    m = _model(seed=1)
    opt = getattr(nc.optim, name)(m, **kw)
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in m.params.items()}
    topt = getattr(torch.optim, name)(list(tp.values()), **kw)
    rng = np.random.default_rng(0)
    for _ in range(4):
        topt.zero_grad()
        for k, t in tp.items():
            g = rng.standard_normal(t.shape).astype(np.float32)
            m.grads[k][...] = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for k, t in tp.items():
        np.testing.assert_allclose(m.params[k], t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    a, b = _model(), _model()
    oa = SGD(a, lr=0.1, momentum=0.9)
    for m in (a, b):
        m.grads["fc.weight"][...] = 0.3
        m.grads["fc.bias"][...] = -0.2
    oa.step()
    oa.step()
    for k in a.params:
        b.params[k][...] = a.params[k]
    ob = SGD(b, lr=0.1, momentum=0.9)
    ob.load_state_dict(oa.state_dict())
    oa.step()
    ob.step()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(ValueError, match="state is for SGD, not Adam"):
        Adam(b).load_state_dict(oa.state_dict())


def test_zero_grad_and_float32_state():
    m = _model()
    opt = Adam(m)
    m.grads["fc.weight"][...] = 1
    opt.step()
    assert all(s.dtype == np.float32 for slot in opt.state.values() for s in slot.values())
    assert m.params["fc.weight"].dtype == np.float32
    opt.zero_grad()
    assert not m.grads["fc.weight"].any()


@pytest.mark.parametrize("bad,match", [
    (lambda m: SGD(m, lr=-1), "lr must be a number >= 0"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov=True needs a momentum"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), r"betas\[1\] must be a number in \[0, 1\)"),
    (lambda m: SGD(m, lr=float("nan")), "lr must be"),
])
def test_bad_hyper_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        bad(_model())
    with pytest.raises(TypeError, match="expects a numbacnn.Model"):
        SGD(object(), lr=0.1)


def test_schedules():
    opt = SGD(_model(), lr=1.0)
    s = StepLR(opt, step_size=2, gamma=0.5)
    lrs = [opt.lr]
    for _ in range(4):
        s.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = SGD(_model(), lr=0.1)
    c = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    got = [opt.lr]
    for _ in range(4):
        c.step()
        got.append(opt.lr)
    want = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    np.testing.assert_allclose(got, want)
    opt = SGD(_model(), lr=0.3)
    w = ConstantLR(opt, warmup=2)
    got = [opt.lr]
    for _ in range(3):
        w.step()
        got.append(opt.lr)
    np.testing.assert_allclose(got, [0.1, 0.2, 0.3, 0.3])
    again = ConstantLR(SGD(_model(), lr=0.3), warmup=2)
    again.load_state_dict(w.state_dict())
    assert again.optimizer.lr == 0.3


def test_cosine_matches_torch():
    torch = pytest.importorskip("torch")
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.1)
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=5, eta_min=0.001)
    opt = SGD(_model(), lr=0.1)
    s = CosineAnnealingLR(opt, T_max=5, eta_min=0.001)
    for _ in range(5):
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-9)
        topt.step()
        ts.step()
        s.step()


@pytest.mark.cuda
@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                  lambda m: AdamW(m, lr=0.01, weight_decay=0.1)])
def test_cuda_matches_cpu_and_state_follows_the_model(make):
    cpu, gpu = _model(), _model()
    ocpu, ogpu = make(cpu), make(gpu)
    rng = np.random.default_rng(0)
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in cpu.params.items()} for _ in range(3)]
    for i, gs in enumerate(grads):
        if i == 1:
            gpu.to("cuda")  # the state made on the CPU must follow
        for k, g in gs.items():
            cpu.grads[k][...] = g
            if gpu.device == "cuda":
                gpu.grads[k].copy_to_device(g)
            else:
                gpu.grads[k][...] = g
        ocpu.step()
        ogpu.step()
    state = gpu.state()
    for k in cpu.params:
        np.testing.assert_allclose(state[f"params/{k}"], cpu.params[k], rtol=1e-6, atol=1e-7)
    assert ogpu.state_dict()["steps"] == 3
