"""``Trainer``: mini-batch training with a progress bar, validation, checkpoints and resume.

Reproducible by construction: epoch ``e`` shuffles and augments with a generator seeded by
``(seed, e)``, and a checkpoint holds everything else that changes while training (weights,
buffers, optimizer and schedule state, the model's dropout generators, the history), so a run
resumed from the checkpoint of epoch ``e`` ends with the same weights, bit for bit, as one
that never stopped.

Divergence stops training (Keras's ``TerminateOnNaN``, on by default): a batch whose loss is NaN
or infinite raises ``TrainingDivergedError`` before that batch updates the weights, and so do
weights or validation metrics found non-finite at the end of an epoch, before its checkpoint
is written; the checkpoint keeps the last finished epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from . import losses
from ._checkpoint import check_writable, load_trainer_state, nonfinite, save_trainer_state
from ._fit_compile import compile_first, silent_worker
from ._shapes import expected, fits
from .distributed._trainer import DataParallel
from .model import Model

__all__ = ["Trainer", "History", "Callback", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """Training stopped because the loss, the weights or a validation metric became NaN or inf.

    ``epoch`` and ``batch`` count from 1, as the progress bar does (``batch`` is None when the
    epoch's batches were fine and its end-of-epoch check failed); ``loss`` is the value seen;
    ``summary`` is the message without the advice, for front ends that give their own.
    A ``FloatingPointError``, as NumPy raises under ``np.errstate(all="raise")``: one
    ``except FloatingPointError`` catches both, and a generic ``except RuntimeError`` or
    ``ValueError`` around user code does not mistake it for a bug or bad input.
    """

    def __init__(self, message: str, epoch: int = 0, batch: int | None = None, loss: float = math.nan,
                 summary: str = "") -> None:
        super().__init__(message)
        self.epoch, self.batch, self.loss, self.summary = epoch, batch, loss, summary or message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.epoch, self.batch, self.loss, self.summary)


class _Diverged(Exception):
    """Raised inside an epoch; ``fit`` turns it into a ``TrainingDivergedError``."""

    def __init__(self, what: str, batch: int | None, loss: float) -> None:
        super().__init__(what)
        self.what, self.batch, self.loss = what, batch, loss


class History:
    """Per-epoch metrics, as Keras keeps them: ``history.history["val_accuracy"][-1]``."""

    def __init__(self, history: dict[str, list[float]] | None = None, epoch: list[int] | None = None) -> None:
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(epoch or [])

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4f}" for k, v in self.history.items())
        return f"<History: {len(self.epoch)} epochs; last: {last}>"


class Callback:
    """Hooks called by ``fit``; set ``trainer.stop_training = True`` to stop after this epoch."""

    def on_epoch_begin(self, epoch: int, trainer: "Trainer") -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict[str, float], trainer: "Trainer") -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: "Trainer") -> None:
        pass


class _FnCallback(Callback):
    def __init__(self, fn: Callable[[int, dict[str, float]], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: "Trainer") -> None:
        self.fn(epoch, logs)


def _batches(n: int, batch_size: int) -> range:
    return range(0, n, batch_size)


class Trainer:
    """Trains ``model`` with ``optimizer`` on a loss (``"cross_entropy"``, ``"mse"`` or a function).

    ``schedule`` (an ``optim.LRSchedule``) is stepped at the end of every epoch; ``seed`` fixes
    the shuffling and augmentation of every epoch. ``distributed=True``: data-parallel over MPI
    (``numbacnn.distributed``); ``fit`` and ``evaluate`` are then called on every rank alike.
    """

    def __init__(self, model: Model, optimizer: Any = None, loss: Any = "cross_entropy",
                 schedule: Any = None, seed: int = 0, distributed: bool = False) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"Trainer() expects a numbacnn.Model, found {type(model).__name__}")
        if len(model.graph.inputs) != 1 or len(model.graph.outputs) != 1:
            raise ValueError("Trainer handles models with one input and one output")
        if optimizer is not None and getattr(optimizer, "model", None) is not model:
            raise ValueError("the optimizer was made for another model: build it with this model")
        self.model = model
        self.optimizer = optimizer
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = losses.get(loss)
        self.schedule = schedule
        self.seed = int(seed)
        self.epoch = 0
        self.history = History()
        self.stop_training = False
        self.info: dict[str, Any] = {}  # JSON-able notes kept in checkpoints (the CLI's dataset)
        # How many epochs the checkpoint file holds, as the last fit wrote or resumed it (None:
        # none yet): what an interrupted run can be resumed from.
        self.checkpoint_epoch: int | None = None
        self._resumed = False
        self._fitted = False  # a silent fit's first epoch may start a compile worker, once
        self._dp = DataParallel(model) if distributed else None  # the link to the other ranks

    # checks ----------------------------------------------------------------------------------
    def _check_data(self, x: Any, y: Any, what: str) -> None:
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(f"{what}: x and y must be NumPy arrays, found {type(x).__name__} and {type(y).__name__}")
        want = self.model.input_shapes[0]
        if not fits(x.shape[1:], want):
            raise ValueError(f"{what}: x must be {expected(want)}, found {x.shape}")
        if x.dtype != self.model.dtype:
            raise TypeError(f"{what}: x is {x.dtype} but the model is {self.model.dtype.name}; convert the data "
                            f"(x.astype(np.{self.model.dtype.name}))")
        if len(x) != len(y):
            raise ValueError(f"{what}: x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError(f"{what}: no samples")
        if self.loss_fn is losses.mse and np.issubdtype(y.dtype, np.floating) and y.dtype != self.model.dtype:
            raise TypeError(f"{what}: y is {y.dtype} but the model is {self.model.dtype.name}; mse never mixes "
                            f"float dtypes: convert the targets (y.astype(np.{self.model.dtype.name}))")

    def _classifying(self, y: np.ndarray) -> bool:
        return y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and len(self.model.output_shape) == 1

    # one step --------------------------------------------------------------------------------
    def _loss(self, out: Any, yb: np.ndarray) -> tuple[float, Any, int]:
        """Loss, its gradient, and the correct count (0 unless classifying), on out's device."""
        if self.loss_fn is losses.cross_entropy:
            return losses.cross_entropy_counted(out, yb)
        loss, gy = self.loss_fn(out, yb)
        if not self._classifying(yb):
            return loss, gy, 0
        host = out if isinstance(out, np.ndarray) else out.copy_to_host()
        return loss, gy, int((host.argmax(axis=1) == yb).sum())

    def train_step(self, xb: np.ndarray, yb: np.ndarray, finite_only: bool = False) -> tuple[float, int]:
        """Forward, loss, backward (no input gradient), update; returns (loss, correct count).

        The logits stay on the model's device: the loss kernels run there too. With
        ``finite_only`` a NaN or infinite loss returns at once, the weights not updated.
        """
        self.optimizer.zero_grad()
        out = self.model.forward(xb, training=True, host=False)
        loss, gy, correct = self._loss(out, yb)
        if self._dp is None and finite_only and not math.isfinite(loss):
            return loss, correct
        self.model.backward(gy, input_grad=False)
        if self._dp is not None:  # the mean gradient; the loss and count of every rank's batch
            loss, correct = self._dp.average_gradients(loss, correct)
        if finite_only and not math.isfinite(loss):  # distributed: checked on the global loss, so
            return loss, correct                     # every rank skips the step and stops alike
        self.optimizer.step()
        return loss, correct

    # fit ---------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None, shuffle: bool = True,
            augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
            callbacks: Sequence[Any] = (), verbose: int = 1, checkpoint: str | os.PathLike | None = None,
            resume: bool = False, terminate_on_nan: bool = True) -> History:
        """Train until ``epochs`` epochs are done; returns the ``History`` (train and val metrics).

        ``verbose``: 0 silent, 1 a tqdm bar per epoch when stderr is a terminal (images/s, loss,
        accuracy), 2 one line per epoch on stdout. ``checkpoint`` is written (atomically) after
        every epoch; its folder is checked before training starts. With ``resume=True`` an
        existing checkpoint is loaded first and training continues from its epoch (a resumed
        fit counts ``epochs`` from the start of the run). ``terminate_on_nan`` (default True)
        raises ``TrainingDivergedError`` on the first NaN or infinite loss, naming the epoch and
        batch, before that batch changes the weights; False trains on regardless (a checkpoint
        of non-finite weights is still refused by ``Model.save``).
        """
        if self.optimizer is None:
            raise ValueError("fit() needs an optimizer: Trainer(model, nc.optim.SGD(model, lr=...))")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, found {epochs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, found {batch_size!r}")
        self._check_data(x, y, "fit")
        if validation_data is not None:
            self._check_data(*validation_data, "validation_data")
        if resume and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH (the file to resume from and write to)")
        root = self._dp is None or self._dp.is_root  # distributed: rank 0 alone reads and writes files
        if checkpoint is not None and root:
            check_writable(checkpoint)
        self.checkpoint_epoch = None
        if resume and root and os.path.exists(checkpoint):
            self.load_checkpoint(checkpoint)
            self.checkpoint_epoch = self.epoch
        if not self._resumed:
            self.epoch, self.history = 0, History()
        self._resumed = False
        if self._dp is not None:  # every rank continues from rank 0's (possibly resumed) state
            verbose = self._dp.start_fit(self, x, y, epochs, batch_size, shuffle, validation_data, verbose)
        cbs = [c if isinstance(c, Callback) else _FnCallback(c) for c in callbacks]
        self.stop_training = False
        if self.epoch < epochs and verbose:  # compile first (on a twin), so the epoch bar times training
            compile_first(self, x, y, batch_size, validation_data)
        # A silent fit compiles as it trains; on a cold cache a worker process helps there too
        # (its first epoch, the first time only: the worker's samples are the first few).
        worker = contextlib.nullcontext() if verbose or self._fitted else silent_worker(self, x, y, batch_size)
        self._fitted = True
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch
            for c in cbs:
                c.on_epoch_begin(epoch, self)
            try:
                with worker:
                    logs = self._train_epoch(x, y, epoch, epochs, batch_size, shuffle, augment, cbs, verbose,
                                             validation_data, terminate_on_nan)
                worker = contextlib.nullcontext()
            except _Diverged as d:
                n = len(x) if self._dp is None else self._dp.samples(len(x))
                raise self._diverged(d, epoch, epochs, -(-n // batch_size), checkpoint) from None
            if self.schedule is not None:
                self.schedule.step()
            self.epoch = epoch + 1
            self.history.append(epoch, logs)
            if checkpoint is not None:
                if root:
                    self.save_checkpoint(checkpoint)
                self.checkpoint_epoch = self.epoch
            for c in cbs:
                c.on_epoch_end(epoch, logs, self)
            if self._dp is not None:
                self.stop_training = self._dp.any(self.stop_training)
        return self.history

    def _train_epoch(self, x, y, epoch, epochs, batch_size, shuffle, augment, cbs, verbose,
                     validation_data, terminate_on_nan) -> dict[str, float]:
        from tqdm import tqdm

        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
        if self._dp is not None:  # this rank's share; the figures below count every rank's samples
            order, rng = self._dp.epoch_share(order, rng)
        n, world = len(order), 1 if self._dp is None else self._dp.size
        classify = self._classifying(y)
        bar = tqdm(total=n * world, unit="img", desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                   disable=None if verbose == 1 else True, dynamic_ncols=True, leave=True)
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        with bar:
            for b, start in enumerate(_batches(n, batch_size)):
                idx = order[start:start + batch_size]
                xb = x[idx]
                if augment is not None:
                    xb = np.ascontiguousarray(augment(xb, rng), dtype=x.dtype)
                loss, ok = self.train_step(xb, y[idx], finite_only=terminate_on_nan)
                if terminate_on_nan and not math.isfinite(loss):
                    raise _Diverged(f"the loss is {loss}", b + 1, loss)
                loss_sum += loss * len(idx) * world
                correct += ok
                seen = (start + len(idx)) * world
                logs = {"loss": loss_sum / seen, **({"accuracy": correct / seen} if classify else {})}
                for c in cbs:
                    c.on_batch_end(b, logs, self)
                bar.update(len(idx) * world)
                bar.set_postfix(_short(logs), refresh=False)
            if self._dp is not None:
                self._dp.average_buffers(self.model)
            if validation_data is not None:
                val = self.evaluate(*validation_data, batch_size=max(batch_size, 256))
                logs.update({f"val_{k}": v for k, v in val.items()})
                bar.set_postfix(_short(logs))
        if terminate_on_nan:
            self._check_finite(logs)
        if verbose == 2:
            seconds = time.perf_counter() - t0
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
            print(f"epoch {epoch + 1}/{epochs}  {metrics}  ({n * world / seconds:,.0f} img/s, {seconds:.1f} s)",
                  flush=True)
        return logs

    def _check_finite(self, logs: dict[str, float]) -> None:
        """After an epoch's last update: weights and validation metrics finite, or _Diverged."""
        bad = nonfinite(self.model.state())
        if bad:
            names = ", ".join(k.split("/", 1)[1] for k in bad[:4]) + (" ..." if len(bad) > 4 else "")
            raise _Diverged(f"after its last batch the weights hold NaN or inf ({names})", None, logs["loss"])
        for k, v in logs.items():
            if not math.isfinite(v):
                raise _Diverged(f"the {k.replace('_', ' ')} is {v}", None, v)

    def _diverged(self, d: _Diverged, epoch: int, epochs: int, batches: int,
                  checkpoint: str | os.PathLike | None) -> TrainingDivergedError:
        where = f"epoch {epoch + 1}/{epochs}" + (f", batch {d.batch}/{batches}" if d.batch else "")
        if checkpoint is None:
            kept = ""
        elif self.checkpoint_epoch is None:
            state = "is unchanged" if os.path.exists(checkpoint) else "does not exist"
            kept = f"; no checkpoint was written ({os.fspath(checkpoint)} {state})"
        else:
            kept = f"; the checkpoint {os.fspath(checkpoint)} still holds epoch {self.checkpoint_epoch}, the last finished"
        summary = f"training diverged at {where}: {d.what}{kept}."
        lr = getattr(self.optimizer, "lr", None)
        now = f" (it is {lr:g})" if isinstance(lr, (int, float)) else ""
        advice = f" Try a lower learning rate{now}, or fit(..., terminate_on_nan=False) to train on regardless."
        return TrainingDivergedError(summary + advice, epoch + 1, d.batch, d.loss, summary)

    # inference -------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs (logits) for every sample, in evaluation mode."""
        want = self.model.input_shapes[0]
        if not isinstance(x, np.ndarray) or not fits(x.shape[1:], want):
            raise ValueError(f"predict: x must be an array {expected(want)}, found {getattr(x, 'shape', type(x).__name__)}")
        outs = [self.model.forward(x[s:s + batch_size], training=False) for s in _batches(len(x), batch_size)]
        empty = () if outs else self.model.shapes_at(x.shape[1:])[self.model.graph.outputs[0]]  # at x's size
        return np.concatenate(outs) if outs else np.zeros((0, *empty), self.model.dtype)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` over all of ``x`` (accuracy for integer labels; each rank
        evaluates a slice when distributed, and every rank gets the figures of all of ``x``)."""
        self._check_data(x, y, "evaluate")
        classify = self._classifying(y)
        loss_sum, correct = 0.0, 0
        lo, hi = (0, len(x)) if self._dp is None else self._dp.eval_range(len(x))
        for s in _batches(hi - lo, batch_size):
            rows = slice(lo + s, min(hi, lo + s + batch_size))
            out = self.model.forward(x[rows], training=False, host=False)
            loss, _, ok = self._loss(out, y[rows])
            loss_sum += loss * out.shape[0]
            correct += ok
        loss_sum, correct = (loss_sum, correct) if self._dp is None else self._dp.total(loss_sum, correct)
        result = {"loss": loss_sum / len(x)}
        if classify:
            result["accuracy"] = correct / len(x)
        return result

    # checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the model with everything needed to resume (atomically: never half a file)."""
        save_trainer_state(self, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a ``save_checkpoint`` file; the next ``fit`` continues from its epoch."""
        run = load_trainer_state(self, path)
        self.epoch, self.history, self.info = run.epoch, History(run.history, run.history_epochs), run.info
        self._resumed = True


def _short(logs: dict[str, float]) -> dict[str, str]:
    names = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
    return {names.get(k, k): f"{v:.4f}" for k, v in logs.items()}
