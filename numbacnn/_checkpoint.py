"""Training checkpoints: a ``Model.save`` file whose ``extra`` arrays hold the trainer's state.

Besides weights and buffers it keeps the optimizer and schedule state, the epoch, the history
and the state of every node's random generator (dropout masks), which is what makes a resumed
run bit-identical to one that never stopped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .model import read_checkpoint

FORMAT = "numbacnn.trainer/1"


def _json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), np.uint8)


def _from_json_array(a: np.ndarray) -> Any:
    return json.loads(np.asarray(a, np.uint8).tobytes().decode())


def save_trainer_state(trainer: Any, path: str | os.PathLike) -> None:
    meta = {
        "format": FORMAT, "epoch": trainer.epoch, "seed": trainer.seed, "loss": trainer.loss_name,
        "history": trainer.history.history, "history_epochs": trainer.history.epoch,
        "optimizer": None if trainer.optimizer is None else
        {"class": type(trainer.optimizer).__name__, "config": trainer.optimizer.config},
        "rng": trainer.model.rng_state(),
        "info": trainer.info,
    }
    extra = {"trainer": _json_array(meta)}
    if trainer.optimizer is not None:
        extra.update({f"optim/{k}": v for k, v in trainer.optimizer.state_dict().items()})
    if trainer.schedule is not None:
        extra.update({f"schedule/{k}": v for k, v in trainer.schedule.state_dict().items()})
    tmp = f"{os.fspath(path)}.tmp"
    try:
        trainer.model.save(tmp, extra=extra)
        os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_trainer_meta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The trainer metadata and all arrays of a training checkpoint."""
    state = read_checkpoint(path)
    if "extra/trainer" not in state:
        raise ValueError(f"{path}: a model file without training state (saved by Model.save, not by a Trainer)")
    meta = _from_json_array(state["extra/trainer"])
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown training checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta, state


def _section(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_trainer_state(trainer: Any, path: str | os.PathLike) -> None:
    from .train import History

    meta, state = read_trainer_meta(path)
    model = trainer.model
    spec = _from_json_array(state["spec"])
    if spec.get("graph") != model.to_spec()["graph"] or spec.get("dtype") != model.dtype.name:
        raise ValueError(f"{path}: the checkpoint is for another model (its graph or dtype differs from this one)")
    optim_state = _section(state, "extra/optim/")
    if trainer.optimizer is not None:
        kind = (meta.get("optimizer") or {}).get("class")
        if kind != type(trainer.optimizer).__name__:
            raise ValueError(f"{path}: the checkpoint holds {kind or 'no'} optimizer state, "
                             f"this trainer uses {type(trainer.optimizer).__name__}")
    sched_state = _section(state, "extra/schedule/")
    if (trainer.schedule is not None) != bool(sched_state):
        raise ValueError(f"{path}: the checkpoint was written {'with' if sched_state else 'without'} "
                         f"a learning-rate schedule; give the trainer the same")
    if set(meta["rng"]) != set(model.rng_state()):
        raise ValueError(f"{path}: the checkpoint's nodes differ from the model's")
    model.load_state(state, source=str(path))
    if trainer.optimizer is not None:
        trainer.optimizer.load_state_dict(optim_state)
    if trainer.schedule is not None:
        trainer.schedule.load_state_dict(sched_state)
    model.set_rng_state(meta["rng"])
    trainer.epoch = int(meta["epoch"])
    trainer.history = History(meta["history"], meta["history_epochs"])
    trainer.info = dict(meta.get("info") or {})
