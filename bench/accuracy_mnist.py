"""Accuracy benchmark: network3's two-conv ReLU net on the real MNIST test set.

The 10,000 images of ``../shared/data/mnist`` are split into the first 8,000 for training and
the last 2,000 held out. The recipe: conv 20@5x5, pool 2, conv 40@5x5, pool 2, linear 100,
linear 10 (ReLU); SGD lr 0.05, momentum 0.9, weight decay 1e-4, batch 64, 10 epochs. PyTorch
with the same recipe reaches 98.55% to 99.05% over three seeds (mean 98.85%); the target is
at least 98.5%.

    python bench/accuracy_mnist.py                 # the full run, seed 0 (several minutes)
    python bench/accuracy_mnist.py --seeds 0 1 2   # three seeds
    python bench/accuracy_mnist.py --smoke         # one epoch on 2,000 images (CI's version)
    python bench/accuracy_mnist.py --device cuda   # on a GPU

``python -m pytest -m slow tests/test_zoo.py`` runs the full recipe as a test (seed 0).

Measured: seed 0 98.60% on a 2-core CPU (49 s when the machine is quiet), seeds 1 and 2
98.35% and 99.00%; on an H100, seeds 0, 1, 2 all 98.95% (7 s each). float32 rounding makes
near-tied max-pool windows break differently from run to run of different code, so the
trajectories (not the recipe) differ between devices.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import numbacnn as nc
from numbacnn.data import load_mnist, train_test_split
from numbacnn.optim import SGD

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
TARGET = 0.985


def run(mnist_dir: str | Path = DEFAULT_DIR, seed: int = 0, epochs: int = 10, n_train: int = 8000,
        verbose: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Train the recipe on the first ``n_train`` images; evaluate on the last 2,000."""
    (x, y), (xv, yv) = train_test_split(*load_mnist(mnist_dir, split="test"), test_size=2000, shuffle=False)
    x, y = x[:n_train], y[:n_train]
    model = nc.zoo.network3("conv2_relu", seed=seed).to(device)
    trainer = nc.Trainer(model, SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4), seed=seed)
    t0 = time.perf_counter()
    history = trainer.fit(x, y, epochs=epochs, batch_size=64, validation_data=(xv, yv), verbose=verbose)
    seconds = time.perf_counter() - t0
    return {"seed": seed, "accuracy": history["val_accuracy"][-1], "loss": history["val_loss"][-1],
            "seconds": seconds, "images_per_s": len(x) * epochs / seconds, "history": history.history}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DIR))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--smoke", action="store_true", help="1 epoch on 2,000 training images")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    if not (Path(args.data_dir) / "t10k-images-idx3-ubyte.gz").exists():
        print(f"error: MNIST test set not found in {args.data_dir}", file=sys.stderr)
        return 2
    epochs, n_train = (1, 2000) if args.smoke else (args.epochs, 8000)
    results = []
    for seed in args.seeds:
        r = run(args.data_dir, seed, epochs, n_train, verbose=2, device=args.device)
        results.append(r)
        print(f"seed {seed}: held-out accuracy {r['accuracy']:.2%} (loss {r['loss']:.4f}), "
              f"{r['seconds']:.0f} s, {r['images_per_s']:,.0f} img/s", flush=True)
    acc = [r["accuracy"] for r in results]
    print(f"mean {np.mean(acc):.2%}, min {min(acc):.2%}, max {max(acc):.2%} over {len(acc)} seed(s); "
          f"target >= {TARGET:.1%}" + ("" if not args.smoke else " (smoke run: target not applied)"))
    return 0 if args.smoke or min(acc) >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
