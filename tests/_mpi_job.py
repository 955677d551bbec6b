"""One rank of the jobs tests/test_distributed.py launches with mpiexec (not collected by pytest).

``python -m mpi4py tests/_mpi_job.py MODE OUT [options]``; each rank writes what the test
checks to ``OUT/rank<r>.npz`` (weights, buffers, history, evaluation) after training.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numba
import numpy as np

import numbacnn as nc
import numbacnn.distributed as dist
from numbacnn.data import load_digits, train_test_split
from numbacnn.optim import SGD, StepLR

# 320: no padding on 1, 2 or 4 ranks, so every run sees the same samples; 99 validation images
# do not split evenly, so evaluation must not pad.
N_TRAIN, N_VAL = 320, 99


def data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    (x, y), (xv, yv) = train_test_split(*load_digits(), test_size=0.2, seed=0)
    return (x[:N_TRAIN], y[:N_TRAIN]), (xv[:N_VAL], yv[:N_VAL])


def mlp(seed: int) -> nc.Model:
    g = nc.Graph()
    x = g.input((1, 8, 8))
    h = g.relu(g.linear(g.flatten(x), out_features=16, name="fc1"))
    g.output(g.linear(h, out_features=10, name="fc2"))
    return nc.Model(g, seed=seed)


def conv_bn(seed: int) -> nc.Model:
    g = nc.Graph()
    x = g.input((1, 8, 8))
    h = g.conv2d(x, out_channels=4, kernel_size=3, padding=1, bias=False, name="conv")
    h = g.dropout(g.relu(g.batch_norm2d(h, name="bn")), p=0.2, name="drop")
    g.output(g.linear(g.flatten(h), out_features=10, name="fc"))
    return nc.Model(g, seed=seed)


def trainer(model: nc.Model, seed: int, distributed: bool = True) -> nc.Trainer:
    opt = SGD(model, lr=0.05, momentum=0.9)
    return nc.Trainer(model, opt, schedule=StepLR(opt, step_size=1, gamma=0.7), seed=seed, distributed=distributed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("fit", "bn", "fail", "mismatch"))
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shuffle", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    r = dist.rank()
    (x, y), (xv, yv) = data()
    # Every rank builds its model from a seed of its own: training must start from rank 0's.
    build = conv_bn if args.mode == "bn" else mlp
    t = trainer(build(seed=100 + r).to(args.device), seed=7 + r)
    callbacks = []
    if args.mode == "fail":
        from numbacnn.train import Callback

        class Fail(Callback):
            def on_batch_end(self, batch, logs, trainer):
                if r == 1 and batch == 3:
                    with open(os.path.join(args.out, "failed_at"), "w") as f:
                        f.write(repr(time.time()))
                    raise RuntimeError("rank 1 fails on purpose at batch 4")

        callbacks.append(Fail())
    batch_size = args.batch_size // 2 if args.mode == "mismatch" and r == 1 else args.batch_size
    history = t.fit(x, y, epochs=args.epochs, batch_size=batch_size, shuffle=bool(args.shuffle),
                    validation_data=(xv, yv), verbose=2, callbacks=callbacks,
                    checkpoint=os.path.join(args.out, f"ck{r}.npz"), resume=args.resume)
    result = t.evaluate(xv, yv, batch_size=32)  # 4 batches over 2 ranks: every rank its own slice
    state = {k: v for k, v in t.model.state().items()}
    notes = {"history": history.history, "epochs": history.epoch, "evaluate": result, "epoch": t.epoch,
             "lr": t.optimizer.lr, "size": dist.size(), "seed": t.seed, "threads": numba.get_num_threads()}
    np.savez(os.path.join(args.out, f"rank{r}.npz"), notes=np.frombuffer(json.dumps(notes).encode(), np.uint8),
             **state)


if __name__ == "__main__":
    main()
