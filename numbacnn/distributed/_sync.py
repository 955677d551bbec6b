"""Broadcasts from rank 0: a model's parameters and buffers, an optimizer's state, a Trainer's.

Arrays travel as one packed byte buffer through MPI's buffer interface; only their names,
dtypes and shapes (and the Trainer's JSON-able notes: epoch, history, generator states) go
through mpi4py's pickled ``bcast``. Every receiving rank checks that what arrives fits what
it built (the same graph, dtype, optimizer, data shapes and settings) and raises otherwise,
naming its rank and the difference, which ends the job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._comm import init, rank

__all__ = ["broadcast_arrays", "broadcast_model", "broadcast_optimizer", "broadcast_trainer"]


def broadcast_arrays(arrays: dict[str, np.ndarray] | None, notes: Any = None,
                     root: int = 0) -> tuple[dict[str, np.ndarray], Any]:
    """Rank ``root``'s ``arrays`` (and small picklable ``notes``) on every rank."""
    comm = init()
    if comm.rank == root:
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        layout = [(k, v.dtype.str, v.shape) for k, v in arrays.items()]
    else:
        layout = None
    layout, notes = comm.bcast((layout, notes), root=root)
    sizes = [int(np.prod(shape)) * np.dtype(dt).itemsize for _, dt, shape in layout]
    starts = np.cumsum([0] + [-(-n // 16) * 16 for n in sizes])  # every array 16-byte aligned
    payload = np.empty(int(starts[-1]), np.uint8)
    if comm.rank == root:
        for (k, _, _), start, nbytes in zip(layout, starts, sizes):
            payload[start:start + nbytes] = np.ascontiguousarray(arrays[k]).reshape(-1).view(np.uint8)
    comm.Bcast(payload, root=root)
    out = {k: payload[start:start + nbytes].view(dt).reshape(shape)
           for (k, dt, shape), start, nbytes in zip(layout, starts, sizes)}
    return out, notes


def _check_graph(model: Any, notes: dict[str, Any], what: str) -> None:
    mine = {"graph": model.to_spec()["graph"], "dtype": model.dtype.name}
    if mine != notes["model"]:
        differs = "dtype" if mine["graph"] == notes["model"]["graph"] else "graph"
        raise ValueError(f"rank {rank()}: the model's {differs} differs from rank 0's ({what}); every rank must "
                         f"build the same model (its seed may differ: rank 0's weights are sent to all)")


def broadcast_model(model: Any, root: int = 0) -> None:
    """Copy rank ``root``'s parameters and buffers into ``model`` on every other rank."""
    mine = init().rank == root
    notes = {"model": {"graph": model.to_spec()["graph"], "dtype": model.dtype.name}} if mine else None
    state, notes = broadcast_arrays(model.state() if mine else None, notes, root)
    if not mine:
        _check_graph(model, notes, "broadcast_model")
        model.load_state(state, source=f"rank {root}'s model")


def broadcast_optimizer(optimizer: Any, root: int = 0) -> None:
    """Copy rank ``root``'s optimizer state (momentum, moments, step count, rate) to every rank."""
    mine = init().rank == root
    state, _ = broadcast_arrays(optimizer.state_dict() if mine else None, None, root)
    if not mine:
        optimizer.load_state_dict(state)


def broadcast_trainer(trainer: Any, checks: dict[str, Any]) -> None:
    """Every rank continues from rank 0's trainer: weights, buffers, optimizer and schedule
    state, epoch, history, seed, notes and the dropout generators (rank r > 0 takes rank 0's
    streams jumped r times, so no two ranks draw the same masks). ``checks`` (data shapes,
    batch size, ...) must be equal on every rank."""
    model, opt, schedule = trainer.model, trainer.optimizer, trainer.schedule
    root = rank() == 0
    arrays = notes = None
    if root:
        arrays = dict(model.state())
        if opt is not None:
            arrays.update({f"optim/{k}": v for k, v in opt.state_dict().items()})
        if schedule is not None:
            arrays.update({f"schedule/{k}": v for k, v in schedule.state_dict().items()})
        notes = {"model": {"graph": model.to_spec()["graph"], "dtype": model.dtype.name}, "checks": checks,
                 "optimizer": type(opt).__name__, "schedule": type(schedule).__name__, "loss": trainer.loss_name,
                 "epoch": trainer.epoch, "history": (trainer.history.history, trainer.history.epoch),
                 "checkpoint_epoch": trainer.checkpoint_epoch, "seed": trainer.seed, "info": trainer.info,
                 "rng": model.rng_state()}
    arrays, notes = broadcast_arrays(arrays, notes)
    if root:
        return
    _check_graph(model, notes, "Trainer.fit")
    mine = {"optimizer": type(opt).__name__, "schedule": type(schedule).__name__, "loss": trainer.loss_name}
    for key, value in {**mine, **checks}.items():
        theirs = notes[key] if key in mine else notes["checks"].get(key)
        if value != theirs:
            raise ValueError(f"rank {rank()}: {key} is {value!r} here but {theirs!r} on rank 0; every rank must "
                             f"run the same fit on the same data")
    model.load_state(arrays, source="rank 0's model")
    if opt is not None:
        opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})
    if schedule is not None:
        schedule.load_state_dict({k[9:]: v for k, v in arrays.items() if k.startswith("schedule/")})
    model.set_rng_state({name: _jumped(state, rank()) for name, state in notes["rng"].items()})
    trainer.epoch, trainer.checkpoint_epoch = notes["epoch"], notes["checkpoint_epoch"]
    trainer.history = type(trainer.history)(*notes["history"])  # train.History, not imported: no cycle
    trainer.seed, trainer.info = notes["seed"], dict(notes["info"])


def _jumped(state: dict[str, Any], times: int) -> dict[str, Any]:
    bits = getattr(np.random, state["bit_generator"])()
    bits.state = state
    return bits.jumped(times).state
