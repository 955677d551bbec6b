import numpy as np
import pytest

import numbacnn as nc
from numbacnn.augment import RandomShift
from numbacnn.data import load_digits, train_test_split
from numbacnn.ensemble import Ensemble
from numbacnn.optim import SGD, Adam, StepLR
from numbacnn.train import Callback, TrainingDivergedError


@pytest.fixture(scope="module")
def digits():
    return train_test_split(*load_digits(), test_size=0.2, seed=0)


def mlp(seed=0, dropout=0.2, device="cpu"):
    g = nc.Graph()
    x = g.input((1, 8, 8))
    h = g.relu(g.linear(g.flatten(x), out_features=32, name="fc1"))
    h = g.dropout(h, p=dropout, name="drop")
    g.output(g.linear(h, out_features=10, name="fc2"))
    return nc.Model(g, seed=seed, device=device)


def trainer(seed=0, schedule=False, opt=SGD, build=mlp, **kw):
    model = build(seed)
    o = opt(model, lr=kw.pop("lr", 0.05), **kw)
    return nc.Trainer(model, o, schedule=StepLR(o, step_size=1, gamma=0.8) if schedule else None, seed=seed)


def test_fit_learns_and_reports_history(digits):
    (x, y), (xv, yv) = digits
    t = trainer(momentum=0.9)
    history = t.fit(x, y, epochs=4, batch_size=32, validation_data=(xv, yv), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2, 3] and all(len(v) == 4 for v in history.history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    result = t.evaluate(xv, yv)
    assert result == pytest.approx({"loss": history["val_loss"][-1], "accuracy": history["val_accuracy"][-1]})
    logits = t.predict(xv, batch_size=100)
    assert logits.shape == (len(xv), 10)
    np.testing.assert_allclose(logits[:7], t.model.forward(xv[:7]), rtol=1e-5, atol=1e-5)
    assert (logits.argmax(1) == yv).mean() == pytest.approx(result["accuracy"])


def test_same_seed_same_history(digits):
    (x, y), _ = digits
    runs = [trainer(seed=s, momentum=0.9).fit(x[:400], y[:400], epochs=2, verbose=0).history for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("build", [mlp, lambda seed: nc.zoo.lenet5(input_shape=(1, 8, 8), seed=seed)],
                         ids=["mlp_dropout", "lenet5"])
def test_resume_is_bit_identical(digits, tmp_path, build):
    (x, y), (xv, yv) = digits
    x, y, xv, yv = x[:300], y[:300], xv[:100], yv[:100]
    kw = dict(seed=1, schedule=True, opt=Adam, lr=0.01, build=build)
    whole = trainer(**kw)
    h_whole = whole.fit(x, y, epochs=4, batch_size=16, validation_data=(xv, yv), verbose=0)
    ck = tmp_path / "run.npz"
    first = trainer(**kw)
    first.fit(x, y, epochs=2, batch_size=16, validation_data=(xv, yv), verbose=0, checkpoint=ck)
    resumed = trainer(**kw)  # a fresh process would do this
    h_resumed = resumed.fit(x, y, epochs=4, batch_size=16, validation_data=(xv, yv), verbose=0,
                            checkpoint=ck, resume=True)
    for k in whole.model.params:
        np.testing.assert_array_equal(resumed.model.params[k], whole.model.params[k])
    assert h_resumed.history == h_whole.history and resumed.optimizer.lr == whole.optimizer.lr
    assert nc.Model.load(ck).param_count() == whole.model.param_count()  # an ordinary model file too


def test_checkpoint_mismatches_refused(digits, tmp_path):
    (x, y), _ = digits
    ck = tmp_path / "run.npz"
    trainer().fit(x[:64], y[:64], epochs=1, verbose=0, checkpoint=ck)
    with pytest.raises(ValueError, match="holds SGD optimizer state, this trainer uses Adam"):
        trainer(opt=Adam).load_checkpoint(ck)
    with pytest.raises(ValueError, match="written without a learning-rate schedule"):
        trainer(schedule=True).load_checkpoint(ck)
    g = nc.Graph()
    g.output(g.linear(g.flatten(g.input((1, 8, 8))), out_features=10))
    other = nc.Model(g)
    with pytest.raises(ValueError, match="checkpoint is for another model"):
        nc.Trainer(other, SGD(other, lr=0.1)).load_checkpoint(ck)
    mfile = tmp_path / "plain.npz"
    other.save(mfile)
    with pytest.raises(ValueError, match="without training state"):
        nc.Trainer(other, SGD(other, lr=0.1)).load_checkpoint(mfile)
    fresh = trainer()
    fresh.fit(x[:64], y[:64], epochs=1, verbose=0, checkpoint=tmp_path / "new.npz", resume=True)
    assert fresh.epoch == 1 and (tmp_path / "new.npz").exists()  # nothing to resume: a fresh start


def test_callbacks_and_stop(digits):
    (x, y), _ = digits
    seen = []

    class Stop(Callback):
        def on_epoch_end(self, epoch, logs, trainer):
            trainer.stop_training = epoch == 1

    t = trainer()
    h = t.fit(x[:64], y[:64], epochs=5, verbose=0, callbacks=[lambda e, logs: seen.append((e, logs["loss"])), Stop()])
    assert [e for e, _ in seen] == [0, 1] and len(h.epoch) == 2


def test_verbosity(digits, capsys):
    (x, y), _ = digits
    trainer().fit(x[:64], y[:64], epochs=2, verbose=2)
    out, err = capsys.readouterr()
    assert out.count("epoch ") == 2 and "img/s" in out and "accuracy" in out
    trainer().fit(x[:64], y[:64], epochs=1, verbose=1)  # not a terminal: tqdm stays quiet
    trainer().fit(x[:64], y[:64], epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_bad_arguments(digits):
    (x, y), _ = digits
    t = trainer()
    cases = [
        (lambda: t.fit(x, y[:-1]), ValueError, "x has 1438 samples but y has 1437"),
        (lambda: t.fit(x.astype(np.float64), y), TypeError, "x is float64 but the model is float32"),
        (lambda: t.fit(x[:, :, :4], y), ValueError, r"x must be \(N, 1, 8, 8\)"),
        (lambda: t.fit(x, y, batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (lambda: nc.Trainer(mlp()).fit(x, y), ValueError, "fit\\(\\) needs an optimizer"),
        (lambda: nc.Trainer(mlp(), t.optimizer), ValueError, "optimizer was made for another model"),
        (lambda: nc.Trainer(mlp(), loss="hinge"), ValueError, "unknown loss 'hinge'"),
        (lambda: t.fit(x, y, resume=True), ValueError, "resume=True needs checkpoint=PATH"),
    ]
    for fn, err, match in cases:
        with pytest.raises(err, match=match):
            fn()


def test_mse_regression_and_augment(digits):
    (x, y), _ = digits
    model = mlp(dropout=0.0)
    onehot = np.eye(10, dtype=np.float32)[y]
    t = nc.Trainer(model, SGD(model, lr=0.1, momentum=0.9), loss="mse")
    h = t.fit(x[:256], onehot[:256], epochs=3, verbose=0, augment=RandomShift(1))
    assert set(h.history) == {"loss"} and h["loss"][-1] < h["loss"][0]
    assert set(t.evaluate(x[:64], onehot[:64])) == {"loss"}


def test_ensemble_average_and_vote(digits):
    (x, y), (xv, yv) = digits
    members = []
    for seed in range(3):
        t = trainer(seed=seed, momentum=0.9)
        t.fit(x, y, epochs=2, verbose=0)
        members.append(t.model)
    single = [nc.Trainer(m).evaluate(xv, yv)["accuracy"] for m in members]
    for method in ("average", "vote"):
        ens = Ensemble(members, method=method)
        pred = ens.predict(xv)
        assert pred.shape == (len(xv),) and pred.dtype == np.int64
        assert ens.evaluate(xv, yv)["accuracy"] >= min(single)
    probs = Ensemble(members).predict_proba(xv)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # A vote of three: each sample's class is the one most members predict.
    votes = np.stack([nc.Trainer(m).predict(xv).argmax(1) for m in members])
    maj = Ensemble(members, method="vote").predict(xv)
    agree = (votes == maj).sum(0)
    assert (agree >= 2)[(votes[0] == votes[1]) | (votes[1] == votes[2]) | (votes[0] == votes[2])].all()
    with pytest.raises(ValueError, match="method must be 'average' or 'vote'"):
        Ensemble(members, method="median")


@pytest.mark.cuda
def test_cuda_training_matches_cpu(digits):
    (x, y), _ = digits
    runs = []
    for device in ("cpu", "cuda"):
        model = mlp(dropout=0.0, device=device)
        t = nc.Trainer(model, SGD(model, lr=0.1, momentum=0.9))
        runs.append((t.fit(x[:16], y[:16], epochs=1, batch_size=8, verbose=0).history, model.state()))
    assert runs[0][0]["loss"] == pytest.approx(runs[1][0]["loss"], rel=1e-5)
    for k, v in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][k], v, rtol=1e-4, atol=1e-6)


# divergence: stop, name the epoch and batch, never replace a good checkpoint --------------------
def nan_at(call):
    """Cross-entropy whose ``call``-th evaluation (1-based) reports a NaN loss."""
    calls = []

    def loss(logits, labels):
        calls.append(1)
        value, gy = nc.losses.cross_entropy(logits, labels)
        return (float("nan") if len(calls) == call else value), gy

    loss.calls = calls
    return loss


def test_nan_loss_stops_training_naming_epoch_and_batch(digits, tmp_path):
    (x, y), _ = digits
    x, y = x[:200], y[:200]
    ck = tmp_path / "run.npz"
    model = mlp()
    t = nc.Trainer(model, SGD(model, lr=0.05), loss=nan_at(7 + 3))  # epoch 2 (of 7 batches), batch 3
    t.fit(x, y, epochs=1, batch_size=32, verbose=0, checkpoint=ck)
    good = ck.read_bytes()
    snapshots = []

    class Snapshot(Callback):
        def on_batch_end(self, batch, logs, trainer):
            snapshots.append({k: v.copy() for k, v in trainer.model.params.items()})

    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 2/3, batch 3/7: the loss is nan; the "
                                                    r"checkpoint .*run.npz still holds epoch 1.*lower learning rate "
                                                    r"\(it is 0.05\).*terminate_on_nan=False") as e:
        t.fit(x, y, epochs=3, batch_size=32, verbose=0, checkpoint=ck, resume=True, callbacks=[Snapshot()])
    assert (e.value.epoch, e.value.batch) == (2, 3) and np.isnan(e.value.loss)
    assert isinstance(e.value, FloatingPointError)
    assert ck.read_bytes() == good and t.epoch == 1 and len(t.loss_fn.calls) == 10
    # The batch with the NaN loss did not update the weights: they are those after batch 2.
    assert len(snapshots) == 2
    for k, v in t.model.params.items():
        np.testing.assert_array_equal(v, snapshots[-1][k])


def test_nonfinite_weights_at_epoch_end_stop_before_the_checkpoint(digits, tmp_path):
    (x, y), _ = digits
    ck = tmp_path / "run.npz"

    class Corrupt(Callback):  # weights that go bad in the last update, with a finite loss
        def on_batch_end(self, batch, logs, trainer):
            if batch == 1:
                trainer.model.params["fc2.bias"][3] = np.inf

    t = trainer()
    with pytest.raises(TrainingDivergedError, match=r"at epoch 1/2: after its last batch the weights hold NaN "
                                                    r"or inf \(fc2.bias\); no checkpoint was written "
                                                    r"\(.*run.npz does not exist\)"):
        t.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0, checkpoint=ck, callbacks=[Corrupt()])
    assert not ck.exists() and t.epoch == 0


def test_terminate_on_nan_false_trains_on(digits):
    (x, y), _ = digits
    model = mlp()
    t = nc.Trainer(model, SGD(model, lr=0.05), loss=nan_at(1))
    h = t.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0, terminate_on_nan=False)
    assert np.isnan(h["loss"][0]) and len(t.loss_fn.calls) == 2


def test_unwritable_checkpoint_is_refused_before_training(digits, tmp_path, monkeypatch):
    (x, y), _ = digits
    t = trainer()
    steps = []
    monkeypatch.setattr(t, "train_step", lambda *a, **k: steps.append(1))
    with pytest.raises(FileNotFoundError, match=r"nowhere.run.npz: cannot write the checkpoint there: the folder "
                                                r".*nowhere does not exist"):
        t.fit(x[:64], y[:64], epochs=1, verbose=0, checkpoint=tmp_path / "nowhere" / "run.npz")
    assert steps == []


def test_mse_float64_targets_refused_before_training(digits):
    (x, y), _ = digits
    model = mlp(dropout=0.0)
    t = nc.Trainer(model, SGD(model, lr=0.1), loss="mse")
    with pytest.raises(TypeError, match="fit: y is float64 but the model is float32; mse never mixes"):
        t.fit(x[:64], np.eye(10)[y[:64]], epochs=1, verbose=0)
