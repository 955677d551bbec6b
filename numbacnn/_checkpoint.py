"""The checkpoint file: one ``.npz`` format for ``Model.save`` and the Trainer's checkpoints.

This module owns the format, both ways: ``save_model`` / ``load_model`` (what ``Model.save``
and ``Model.load`` call) and ``save_trainer_state`` / ``load_trainer_state`` (the Trainer's).
The file holds ``params/<key>`` and ``buffers/<key>`` (``Model.state()``), ``spec`` (the model
spec as JSON bytes) and ``extra/<key>`` arrays; a training checkpoint's extras are
``extra/trainer`` (JSON metadata), ``extra/optim/...`` and ``extra/schedule/...``.

Every write goes through ``write_npz``: a temporary file in the target's folder, flushed to
disk, then renamed over the target, so an interrupted or failed save (a full disk, Ctrl-C, a
crash) leaves the previous file as it was. ``read_checkpoint`` refuses anything that is not
such a file before reading it, and never unpickles. A training checkpoint is a ``Model.save``
file whose ``extra`` arrays also hold the optimizer and schedule state, the epoch, the history
and the state of every node's random generator (dropout masks), which is what makes a resumed
run bit-identical to one that never stopped.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import registry
from .graph import GraphError
from .layer import ShapeError

FORMAT = "numbacnn.trainer/1"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"


# writing ---------------------------------------------------------------------------------------
def _temp_path(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then replace ``path`` with it.

    The target is replaced only once the new file is complete and on disk; on any error,
    KeyboardInterrupt included, the temporary file is removed and the target is untouched.
    """
    path = os.fspath(path)
    tmp = _temp_path(path)
    # O_EXCL: never follow or reuse someone else's file; 0o666 lets the umask decide the mode,
    # as a plain open() would.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise type(e)(e.errno, f"{path}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(os.path.dirname(path) or ".")


def _fsync_folder(folder: str) -> None:
    # The rename itself is durable only once the folder is synced (POSIX; Windows cannot open one).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` at exactly ``path``, atomically."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def check_writable(path: str | os.PathLike) -> None:
    """Refuse a checkpoint path that could not be written, before any training starts."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; give a file name for the checkpoint")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: cannot write the checkpoint there: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot write the checkpoint there: the folder {folder} is not writable")


def nonfinite(arrays: dict[str, Any]) -> list[str]:
    """The keys of the floating-point arrays that hold a NaN or an infinity."""
    return [k for k, v in arrays.items()
            if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all()]


# reading ---------------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a checkpoint file, with errors that name the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: a single NumPy array (.npy), not a numbacnn checkpoint "
                         f"(an .npz written by Model.save or 'numbacnn train')")
    if not head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: not a numbacnn checkpoint (an .npz written by Model.save or "
                         f"'numbacnn train'); this file is not even a zip archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        if "pickle" in str(e):  # never suggest allow_pickle: a checkpoint holds no objects
            raise ValueError(f"{path}: not a numbacnn checkpoint (it holds Python objects, which "
                             f"numbacnn never unpickles)") from None
        raise ValueError(f"{path}: not a numbacnn checkpoint (unreadable .npz: {e})") from None
    if "spec" not in state:
        raise ValueError(f"{path}: not a numbacnn checkpoint (no model spec inside)")
    return state


def json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), np.uint8)


def from_json_array(a: np.ndarray, path: str | os.PathLike, what: str) -> Any:
    """Decode a JSON document stored as bytes, naming the file and the entry when it is corrupt."""
    try:
        return json.loads(np.asarray(a, np.uint8).tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt checkpoint: its {what} is not valid JSON ({e})") from None


# models ----------------------------------------------------------------------------------------
def save_model(model: Any, path: str | os.PathLike, extra: dict[str, np.ndarray] | None = None,
               allow_nonfinite: bool = False) -> None:
    """``Model.save``: weights, buffers, the spec and ``extra`` arrays, written atomically;
    non-finite weights are refused unless ``allow_nonfinite``."""
    arrays = model.state()
    bad = [] if allow_nonfinite else nonfinite(arrays)
    if bad:
        names = ", ".join(k.replace("params/", "").replace("buffers/", "buffer ") for k in bad[:6])
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise ValueError(f"{path}: not saved: {names}{more} {'hold' if len(bad) > 1 else 'holds'} NaN or "
                         f"inf (the model has diverged); nothing was written, an existing file is unchanged. "
                         f"Model.save(..., allow_nonfinite=True) writes it anyway, for debugging")
    arrays["spec"] = json_array(model.to_spec())
    for k, v in (extra or {}).items():
        arrays[f"extra/{k}"] = v
    write_npz(path, arrays)


def load_model(cls: Any, path: str | os.PathLike) -> Any:
    """``Model.load``: a ``cls`` rebuilt from the file's spec, with its weights and buffers."""
    state = read_checkpoint(path)
    spec = from_json_array(state.pop("spec"), path, "model spec")
    try:
        model = cls.from_spec(spec)
    except (GraphError, ShapeError, registry.UnknownLayerError, registry.PluginError) as e:
        raise type(e)(f"{path}: {e}") from None
    model.load_state(state, source=str(path))
    return model


# training state --------------------------------------------------------------------------------
def save_trainer_state(trainer: Any, path: str | os.PathLike) -> None:
    meta = {
        "format": FORMAT, "epoch": trainer.epoch, "seed": trainer.seed, "loss": trainer.loss_name,
        "history": trainer.history.history, "history_epochs": trainer.history.epoch,
        "optimizer": None if trainer.optimizer is None else
        {"class": type(trainer.optimizer).__name__, "config": trainer.optimizer.config},
        "rng": trainer.model.rng_state(),
        "info": trainer.info,
    }
    extra = {"trainer": json_array(meta)}
    if trainer.optimizer is not None:
        extra.update({f"optim/{k}": v for k, v in trainer.optimizer.state_dict().items()})
    if trainer.schedule is not None:
        extra.update({f"schedule/{k}": v for k, v in trainer.schedule.state_dict().items()})
    trainer.model.save(path, extra=extra)  # atomic: a failed save keeps the previous checkpoint


def read_trainer_meta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The trainer metadata and all arrays of a training checkpoint."""
    state = read_checkpoint(path)
    if "extra/trainer" not in state:
        raise ValueError(f"{path}: a model file without training state (saved by Model.save, not by a Trainer)")
    meta = from_json_array(state["extra/trainer"], path, "training state")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: unknown training checkpoint format {found!r}, expected {FORMAT!r}")
    return meta, state


def _section(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@dataclass
class TrainerRun:
    """What a training checkpoint restores besides the model, optimizer and schedule state:
    the Trainer's own bookkeeping, which it sets from these fields."""

    epoch: int
    history: dict[str, list[float]]
    history_epochs: list[int]
    info: dict[str, Any] = field(default_factory=dict)


def load_trainer_state(trainer: Any, path: str | os.PathLike) -> TrainerRun:
    """Check a training checkpoint against ``trainer`` (model graph and dtype, optimizer class,
    schedule, nodes), restore the model, optimizer, schedule and generator state into it, and
    return the run's epoch, history and info; nothing is changed when a check fails."""
    meta, state = read_trainer_meta(path)
    model = trainer.model
    spec = from_json_array(state["spec"], path, "model spec")
    if (not isinstance(spec, dict) or spec.get("graph") != model.to_spec()["graph"]
            or spec.get("dtype") != model.dtype.name):
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
    return TrainerRun(int(meta["epoch"]), meta["history"], meta["history_epochs"], dict(meta.get("info") or {}))
