"""CUDA graphs (NUMBACNN_CUDA_GRAPHS=1): a signature's forward and backward replayed as one launch
each give exactly what launching every kernel gives. Under the simulator the capture records
the launches and the replay runs them again (``_cuda_graph``); on a GPU the driver does both."""

import warnings

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import _cuda_graph

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def graphs_off(monkeypatch):
    """Plain models launch kernel by kernel here, whatever the environment says."""
    monkeypatch.setenv(_cuda_graph.ENV, "0")


def net(seed=0, dropout=False):
    g = nc.Graph()
    x = g.input((1, 5, 5))
    h = g.batch_norm2d(g.conv2d(x, out_channels=2, kernel_size=2, name="conv1"), name="bn")
    h = g.max_pool2d(g.relu(h), kernel_size=2)
    skip = g.conv2d(h, out_channels=2, kernel_size=1, name="skip")
    h = g.add(g.relu(g.conv2d(h, out_channels=2, kernel_size=3, padding=1, name="conv2")), skip)
    h = g.flatten(h)
    if dropout:
        h = g.dropout(h, p=0.5)
    g.output(g.linear(h, out_features=3, name="fc"))
    return nc.Model(g, seed=seed)


def data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 5, 5), dtype=np.float32), rng.integers(0, 3, n)


def run(model, steps, grads=None):
    """Steps of batch sizes ``steps`` (two sizes interleaved share the training contexts),
    asking for the input gradient at those where ``grads`` says so."""
    opt = nc.optim.SGD(model, lr=0.05, momentum=0.9)
    out = []
    for i, n in enumerate(steps):
        input_grad = bool(grads and grads[i])
        x, y = data(n, i)
        opt.zero_grad()
        loss, gy = nc.losses.cross_entropy(model.forward(x, training=True, host=False), y)
        gx = model.backward(gy, input_grad=input_grad)
        opt.step()
        out.append((loss, gx[0] if input_grad else None))
    return out, {k: model._executor.backend.to_host(v) for k, v in model.params.items()}


def graphed(monkeypatch, **kw):
    monkeypatch.setenv(_cuda_graph.ENV, "1")
    model = net(**kw).to("cuda")
    monkeypatch.setenv(_cuda_graph.ENV, "0")
    return model


def plans(model):
    return list(model._executor._plans.values())


def test_graph_replays_give_what_launching_gives(monkeypatch):
    # Each signature's forward launched, captured, replayed (its backward a step behind: it
    # waits for a replayed forward); then a backward without input gradients after a replayed
    # forward, launched on contexts that the other signature ran last.
    steps, grads = [2, 1, 2, 1, 2, 1, 2, 1], [1, 1, 1, 1, 1, 1, 0, 0]
    plain = net().to("cuda")
    want, want_params = run(plain, steps, grads)
    assert all(not p.replays for p in plans(plain))  # graphs are off unless asked for
    model = graphed(monkeypatch)
    got, got_params = run(model, steps, grads)
    for (wl, wg), (gl, gg) in zip(want, got):
        assert gl == wl
        if wg is not None:
            np.testing.assert_array_equal(gg, wg)
    for k, v in want_params.items():
        np.testing.assert_array_equal(got_params[k], v, err_msg=k)
    for plan in plans(model):
        assert plan.replays["forward"].graph is not None
        assert plan.replays[("backward", True)].graph is not None


def test_inference_replays_read_the_new_input(monkeypatch):
    model = graphed(monkeypatch)
    plain = net().to("cuda")
    for seed in range(4):
        x, _ = data(1, seed)
        np.testing.assert_array_equal(model.forward(x), plain.forward(x))
    assert any(p.replays["forward"].graph is not None for p in model._executor.thread_pass().plans.values())


def test_dropout_in_training_is_never_captured(monkeypatch):
    model = graphed(monkeypatch, dropout=True)
    run(model, [1, 1])
    for plan in plans(model):
        assert not plan.replays  # forward and backward launch kernel by kernel
    x, _ = data(1, 0)
    for _ in range(3):
        model.forward(x)  # in evaluation dropout is the identity: replayable
    assert any(p.replays["forward"].graph is not None for p in model._executor.thread_pass().plans.values())


def test_a_refused_capture_falls_back_with_one_warning(monkeypatch):
    def refuse(self, dispatcher, config):
        raise RuntimeError("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED (planted)")

    monkeypatch.setattr(_cuda_graph._Recorder, "route", refuse)  # the simulator's capture
    monkeypatch.setattr(_cuda_graph._DriverCapture, "route", refuse)  # a real GPU's
    model = graphed(monkeypatch)
    want = run(net().to("cuda"), [1, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run(model, [1, 1])
    said = [str(w.message) for w in caught if "without a CUDA graph" in str(w.message)]
    assert said and "planted" in said[0]
    assert [loss for loss, _ in got[0]] == [loss for loss, _ in want[0]]
    for k, v in want[1].items():
        np.testing.assert_array_equal(got[1][k], v, err_msg=k)
    assert all(r.off and r.graph is None for p in plans(model) for r in p.replays.values())


def test_a_backward_replays_only_after_its_forward_did(monkeypatch):
    # The forward's capture is refused, the backward's would succeed: a backward graph then
    # would keep reading the saved input of the step it was captured in.
    real, calls = _cuda_graph.capture, []

    def refuse_first(fn):
        calls.append(fn)
        if len(calls) == 1:
            raise RuntimeError("planted refusal of the forward's capture")
        return real(fn)

    monkeypatch.setattr(_cuda_graph, "capture", refuse_first)
    model = graphed(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run(model, [1, 1, 1, 1])
    want = run(net().to("cuda"), [1, 1, 1, 1])
    assert [loss for loss, _ in got[0]] == [loss for loss, _ in want[0]]
    for k, v in want[1].items():
        np.testing.assert_array_equal(got[1][k], v, err_msg=k)
    (plan,) = plans(model)
    assert plan.replays["forward"].off
    assert ("backward", False) not in plan.replays  # never tried: its forward ran kernel by kernel


def test_a_launch_takes_our_stream_and_one_on_its_own_is_refused():
    ours = object()
    assert _cuda_graph._with_stream((4, 256), ours) == (4, 256, ours)
    assert _cuda_graph._with_stream((4, 256, 0, 128), ours) == (4, 256, ours, 128)
    with pytest.raises(RuntimeError, match="cannot be captured"):
        _cuda_graph._with_stream((4, 256, object()), ours)
