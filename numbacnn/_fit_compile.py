"""What ``Trainer.fit`` does about compilation before and while its first epoch runs.

A shown fit (``verbose`` 1 or 2) compiles first, on a twin of the model, so its epoch bar
times training alone; a silent fit compiles as it trains. Either way, on a cold cache, the
first kernel that misses it starts a worker process that compiles the rest of the model from
the other end (numbacnn._precompile).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ._compile_progress import compile_progress
from ._precompile import worker_on_first_compile
from .model import Model

__all__ = ["compile_first", "silent_worker"]


def _rows(x: np.ndarray, batch_size: int) -> np.ndarray:
    # indexed as the epochs index x: a fresh C-contiguous batch
    return np.arange(min(len(x), batch_size, 4))


def silent_worker(trainer: Any, x: np.ndarray, y: np.ndarray,
                  batch_size: int) -> contextlib.AbstractContextManager[None]:
    """Inside the block, the first kernel that misses the cache starts the worker for the
    trainer's model, fed a few of ``x``'s samples."""
    rows = _rows(x, batch_size)
    return worker_on_first_compile(trainer.model, trainer.optimizer, trainer.loss_fn, x[rows], y[rows])


def compile_first(trainer: Any, x: np.ndarray, y: np.ndarray, batch_size: int,
                  validation_data: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Compile what ``fit`` will run, with the compile progress shown, before its first epoch
    bar starts: one training step and one evaluation on a few samples, on a twin of the model
    (same graph, dtype, device; its own parameters, buffers, optimizer, generators), so a run
    stays bit-reproducible."""
    model, opt = trainer.model, trainer.optimizer
    twin = Model(model.graph, seed=model.seed, dtype=model.dtype).to(model.device)
    try:
        twin_opt = type(opt)(twin, **opt.config)
    except (TypeError, ValueError, AttributeError):
        twin_opt = None  # an optimizer its config cannot rebuild: its kernels compile in step one
    twin_trainer = type(trainer)(twin, twin_opt, loss=trainer.loss_fn, seed=trainer.seed)
    rows = _rows(x, batch_size)
    with compile_progress(), worker_on_first_compile(twin, twin_opt, trainer.loss_fn, x[rows], y[rows]):
        if twin_opt is not None:
            twin_trainer.train_step(x[rows], y[rows])
        else:
            out = twin.forward(x[rows], training=True, host=False)
            twin.backward(twin_trainer._loss(out, y[rows])[1], input_grad=False)
        if validation_data is not None:
            xv, yv = validation_data
            rows = rows[:len(xv)]
            twin_trainer.evaluate(xv[rows], yv[rows], batch_size=max(batch_size, 256))
