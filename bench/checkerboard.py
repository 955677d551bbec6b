"""Checkerboard artefacts: transposed convolution against resize-convolution, on MNIST denoising.

Odena, Dumoulin and Olah ("Deconvolution and Checkerboard Artifacts", Distill 2016) show that
a stride-2 transposed convolution whose kernel size is not a multiple of its stride (3x3 here)
paints a 2-pixel-period grid into its output, and that upsampling first (nearest neighbour)
and then convolving does not. This script trains ``nc.zoo.encoder_decoder`` in both variants
on the same task with the same budget and compares the outputs:

- task: ``mnist-denoise-t10k`` -- the real MNIST test images of ``../shared/data/mnist`` with
  Gaussian noise (std 0.5, clipped to [0, 1]) as inputs and the clean images as targets; the
  first 8,000 pairs train, the last 2,000 are held out;
- budget: the same seed (hence the same encoder initialisation and batch order), Adam at
  lr 0.002, batch 32, the same number of epochs; both nets have 9,569 parameters (width 16):
  a 3x3 transposed convolution C -> K and a 3x3 convolution C -> K hold the same weights.

**Checkerboard measure.** For an output image y (H x W, both even), average its four pixel
phases -- y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2] -- into a 2x2 tile t,
and subtract the tile's mean: p = t - mean(t). p repeated over the image is the image's
2-pixel-period pattern, its projection onto the three Fourier components of period 2
((pi, 0), (0, pi), (pi, pi)). The measure is that pattern's share of the image's variance,
mean(p^2) / var(y), i.e. the spectral energy at those three frequencies over all the energy
but the DC term, averaged over the held-out images (0: no such pattern; 1: nothing else).
The clean targets' own value is printed beside it as the floor the data sets.

    python bench/checkerboard.py            # the full run (8,000 pairs, 8 epochs; minutes)
    python bench/checkerboard.py --quick    # 512 pairs, 1 epoch (CI's version, seconds)

Measured (seed 0, 2-core CPU, both runs reproduce bit for bit): the full run gives transposed
4.0e-05 (held-out mse 0.01366), resize 6.9e-08 (mse 0.01486), targets 1.6e-04; --quick gives
transposed 3.4e-02 (mse 0.0614), resize 4.4e-05 (mse 0.0467), targets 1.7e-04. Early in
training the transposed decoder's grid is plain (docs/checkerboard_quick.png); after 8 epochs
it has learnt to cancel most of it, below the clean images' own share, while resize-
convolution stays some 600x lower still, at a slightly higher mse.

The figure (``--figure``; a full run's default is ``docs/checkerboard.png``, --quick writes
none unless asked; written when matplotlib is installed) shows noisy inputs, clean targets, and both variants' outputs side by side, with a
zoomed crop of the first image's centre.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import numbacnn as nc
from numbacnn.data import load_dataset

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
DEFAULT_FIGURE = Path(__file__).resolve().parents[1] / "docs" / "checkerboard.png"
VARIANTS = ("transposed", "resize")


def checkerboard(y: np.ndarray) -> float:
    """Mean over images of the 2-pixel-period pattern's share of each image's variance; ``y``
    is (N, C, H, W) with even H and W (see the module docstring)."""
    n, c, h, w = y.shape
    if h % 2 or w % 2:
        raise ValueError(f"checkerboard: height and width must be even, found {h}x{w}")
    y = y.astype(np.float64).reshape(n * c, h, w)
    tile = y.reshape(n * c, h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    p = tile - tile.mean(axis=(1, 2), keepdims=True)
    var = y.var(axis=(1, 2))
    share = (p ** 2).mean(axis=(1, 2)) / np.maximum(var, 1e-30)
    return float(share[var > 0].mean())


def run(mnist_dir: str | Path = DEFAULT_DIR, quick: bool = False, seed: int = 0, epochs: int | None = None,
        n_train: int | None = None, width: int = 16, lr: float = 2e-3, batch_size: int = 32,
        verbose: int = 0) -> dict[str, Any]:
    """Train both variants; their held-out mse and checkerboard measure, the targets' measure,
    and a few (input, target, outputs) images for the figure."""
    (x, y), (xv, yv) = load_dataset("mnist-denoise-t10k", mnist_dir)
    epochs = epochs if epochs is not None else (1 if quick else 8)
    n_train = n_train if n_train is not None else (512 if quick else len(x))
    n_val = 256 if quick else len(xv)
    x, y, xv, yv = x[:n_train], y[:n_train], xv[:n_val], yv[:n_val]
    result: dict[str, Any] = {"epochs": epochs, "n_train": len(x), "n_val": len(xv), "seed": seed,
                              "target_checkerboard": checkerboard(yv), "show": {"input": xv[:8], "target": yv[:8]}}
    for variant in VARIANTS:
        model = nc.zoo.encoder_decoder(variant, input_shape=x.shape[1:], width=width, seed=seed)
        trainer = nc.Trainer(model, nc.optim.Adam(model, lr), loss="mse", seed=seed)
        t0 = time.perf_counter()
        trainer.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
        out = trainer.predict(xv)
        result[variant] = {"params": model.param_count(), "mse": float(np.mean((out - yv) ** 2)),
                           "checkerboard": checkerboard(out), "seconds": time.perf_counter() - t0}
        result["show"][variant] = out[:8]
    return result


def table(r: dict[str, Any]) -> str:
    lines = [f"encoder_decoder on mnist-denoise-t10k: {r['n_train']:,} training pairs, {r['epochs']} epochs, "
             f"seed {r['seed']}; {r['n_val']:,} held-out images",
             f"{'variant':<12} {'params':>7} {'held-out mse':>13} {'checkerboard':>13} {'seconds':>8}"]
    for v in VARIANTS:
        m = r[v]
        lines.append(f"{v:<12} {m['params']:>7,} {m['mse']:>13.5f} {m['checkerboard']:>13.3e} {m['seconds']:>8.1f}")
    lines.append(f"{'(targets)':<12} {'':>7} {'':>13} {r['target_checkerboard']:>13.3e}")
    return "\n".join(lines)


def figure(r: dict[str, Any], path: str | Path) -> bool:
    """Rows: noisy input, clean target, transposed, resize; the last column zooms into the
    centre 10x10 of the first image, each crop stretched to its own range so that a faint grid
    shows. False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [("noisy input", "input"), (f"clean target\ncb {r['target_checkerboard']:.2e}", "target"),
            (f"transposed\ncb {r['transposed']['checkerboard']:.2e}", "transposed"),
            (f"resize-conv\ncb {r['resize']['checkerboard']:.2e}", "resize")]
    k = len(r["show"]["input"])
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.3 * (k + 1), 1.4 * len(rows)))
    for i, (label, key) in enumerate(rows):
        images = r["show"][key][:, 0]
        for j in range(k):
            axes[i, j].imshow(np.clip(images[j], 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        crop = images[0, 9:19, 9:19]
        axes[i, k].imshow(crop, cmap="magma", interpolation="nearest")
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, k].set_title("zoom (stretched)", fontsize=7)
    fig.suptitle(f"encoder_decoder, MNIST denoising, {r['epochs']} epochs on {r['n_train']:,} pairs", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist-dir", default=str(DEFAULT_DIR))
    p.add_argument("--quick", action="store_true", help="512 pairs, 1 epoch, 256 held out (CI)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", help=f"where the figure goes (default: {DEFAULT_FIGURE.name} in docs/ for a "
                                    f"full run, none for --quick)")
    args = p.parse_args(argv)
    r = run(args.mnist_dir, quick=args.quick, seed=args.seed, epochs=args.epochs, verbose=0 if args.quick else 2)
    print(table(r))
    path = args.figure if args.figure is not None else ("" if args.quick else str(DEFAULT_FIGURE))
    if path:
        print(f"figure: {path}" if figure(r, path) else "figure: not written (matplotlib missing)")
    lower = r["resize"]["checkerboard"] < r["transposed"]["checkerboard"]
    print(f"resize-convolution's checkerboard is {'lower' if lower else 'NOT lower'} than transposed convolution's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
