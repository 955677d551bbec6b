"""The training commands of ``numbacnn``: ``train``, ``evaluate``, ``summary``.

``numbacnn.cli`` registers them in its ``COMMANDS`` table; heavy imports happen inside the
handlers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Any

from ._errors import CliError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, found {text!r}") from None
    if not 2 <= len(shape) <= 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected two to four positive sizes (C,L; C,H,W; C,D,H,W), "
                                         f"found {text!r}")
    return shape


def _takes(model: str, arg: str) -> bool:
    """Whether zoo builder ``model`` has the keyword ``arg`` (variant, num_classes)."""
    import inspect

    from ..zoo import MODELS

    return arg in inspect.signature(MODELS[model]).parameters


def _model_args(p: argparse.ArgumentParser) -> None:
    from ..zoo import MODELS

    p.add_argument("--model", default="lenet5", choices=sorted(MODELS), help="zoo model (default lenet5)")
    p.add_argument("--variant", help="network3 variant: fc, conv1, conv2, conv2_relu (default), conv2_relu_dropout; "
                                     "encoder_decoder variant: transposed (default), resize")


def _data_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from ..data import DATASETS

    p.add_argument("--data", default=default, choices=sorted(DATASETS),
                   help="; ".join(f"{k}: {v}" for k, v in DATASETS.items()))
    p.add_argument("--data-dir", help="folder of the dataset files (MNIST default: the download cache)")
    p.add_argument("--download", action="store_true", help="download MNIST into the cache if missing")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def add_train(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _data_args(p, "digits")
    p.add_argument("--epochs", type=int, default=15, help="default 15")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, help="learning rate (default 0.05 for sgd, 0.001 for adam/adamw)")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                   help="cosine (default): down to 0 at the last epoch; step: x0.1 every third of the epochs")
    p.add_argument("--warmup", type=int, default=0, help="epochs of linear learning-rate warm-up")
    p.add_argument("--augment", help="shift[:K] (random shifts up to K pixels) or crop-flip[:PADDING]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="written after every epoch (default MODEL-DATA.npz here); an existing "
                                        "file is replaced only with --overwrite or --resume")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists, writing to it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --checkpoint by this run's")
    p.add_argument("--quiet", action="store_true", help="no progress output, only the final result")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI, one rank per process: mpiexec -n 4 numbacnn train --distributed "
                        "(--batch-size is per rank; pip install numbacnn[distributed])")


def _check_data_flags(args: argparse.Namespace) -> None:
    """Refuse --data-dir / --download where they would be ignored, in the flags' own words."""

    if args.data_dir is not None and args.data == "digits":
        raise CliError("--data-dir does not apply to --data digits (scikit-learn's bundled digits read no "
                       "files); leave it out, or choose --data mnist, mnist-t10k or cifar10")
    if args.download and not args.data.startswith("mnist"):
        raise CliError(f"--download applies to the MNIST datasets only (mnist, mnist-t10k and the tasks made "
                       f"from it, mnist*-t10k), not {args.data}")
    if args.data == "cifar10" and args.data_dir is None:
        raise CliError("--data cifar10 needs --data-dir FOLDER holding the CIFAR-10 binary batches "
                       "(data_batch_1.bin ... test_batch.bin); it is not downloaded")


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..data import MissingDataError, cache_dir, load_dataset

    _check_data_flags(args)
    try:
        return load_dataset(args.data, args.data_dir, args.download)
    except MissingDataError as e:
        where = "" if args.data_dir is not None else f" into {cache_dir() / 'mnist'}"
        raise FileNotFoundError(
            f"{e.file}: no such file (the folder holds: {', '.join(e.present) or 'no IDX files'}); add "
            f"--download to fetch MNIST{where}, or --data-dir FOLDER holding the MNIST files") from None


def _zoo_model(args: argparse.Namespace, **kwargs: Any) -> Any:
    from ..layer import ShapeError
    from ..zoo import build

    if args.variant is not None:
        if not _takes(args.model, "variant"):
            raise CliError(f"--variant applies to network3 and encoder_decoder only, not {args.model}")
        kwargs["variant"] = args.variant
    try:
        return build(args.model, **kwargs)
    except ShapeError as e:
        if getattr(args, "data", None) is None or "input_shape" not in kwargs:
            raise
        shape = tuple(kwargs["input_shape"])
        raise ShapeError(f"{args.model} does not fit {args.data} images {shape}: {e}; choose a --data "
                         f"with larger images (mnist: 1x28x28, cifar10: 3x32x32)") from None


def _check_checkpoint(path: str, args: argparse.Namespace) -> None:
    """Before any data is read or kernel compiled: never replace a file unasked, and fail now
    (not after the first epoch) when the checkpoint could not be written."""
    from .._checkpoint import check_writable

    if os.path.isfile(path) and not (args.resume or args.overwrite):
        raise CliError(f"{path} exists: add --overwrite to replace it, or --resume to continue training it")
    check_writable(path)


def _resume_command(args: argparse.Namespace, checkpoint: str) -> str:
    """The command line that continues this run from its checkpoint: the same flags (seed,
    schedule, epochs), with --resume."""
    argv = [a for a in (getattr(args, "argv", None) or ["train"]) if a != "--overwrite"]
    if not args.resume:
        argv.append("--resume")
    if args.checkpoint is None:
        argv += ["--checkpoint", checkpoint]
    return shlex.join(["numbacnn", *argv])


def _optimizer(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    from .. import optim

    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    if args.optimizer == "sgd":
        opt = optim.SGD(model, lr, momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay)
    else:
        cls = optim.Adam if args.optimizer == "adam" else optim.AdamW
        opt = cls(model, lr, weight_decay=args.weight_decay)
    if args.schedule == "step":
        return opt, optim.StepLR(opt, step_size=max(1, args.epochs // 3), gamma=0.1, warmup=args.warmup)
    if args.schedule == "cosine":
        return opt, optim.CosineAnnealingLR(opt, T_max=max(1, args.epochs - args.warmup), warmup=args.warmup)
    return opt, (optim.ConstantLR(opt, warmup=args.warmup) if args.warmup else None)


def cmd_train(args: argparse.Namespace) -> int:
    if args.distributed:  # every rank runs the command; an error on one ends them all
        from ..distributed._cli import run

        return run(_train, args)
    return _train(args)


def _train(args: argparse.Namespace) -> int:
    from ..augment import parse
    from ..train import Trainer, TrainingDivergedError

    if args.epochs < 1 or args.batch_size < 1:
        raise CliError("--epochs and --batch-size must be at least 1")
    checkpoint = args.checkpoint or f"{args.model}-{args.data}.npz"
    _check_checkpoint(checkpoint, args)
    augment = parse(args.augment) if args.augment else None
    t0 = time.perf_counter()
    (x, y), (xv, yv) = _load(args)
    # Integer labels: a classifier on cross-entropy; float targets (the denoising pairs): an
    # image-to-image model on mean squared error, which needs a model that takes no classes.
    classify = y.dtype.kind in "iu"
    if classify != _takes(args.model, "num_classes"):
        raise CliError(f"--model {args.model} does not fit --data {args.data}: " + (
            f"{args.model} maps images to images; train it on mnist-denoise-t10k" if classify else
            f"{args.data} has image targets (mean squared error); train encoder_decoder on it"))
    classes = {"num_classes": int(max(y.max(), yv.max())) + 1} if classify else {}
    model = _zoo_model(args, input_shape=x.shape[1:], seed=args.seed, **classes).to(args.device)
    opt, schedule = _optimizer(args, model)
    trainer = Trainer(model, opt, loss="cross_entropy" if classify else "mse", schedule=schedule,
                      seed=args.seed, distributed=args.distributed)
    trainer.info = {"data": args.data, "model": args.model, "variant": args.variant}
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    if not args.quiet:
        print(f"training {args.model} ({model.param_count():,} parameters) on {args.data}: "
              f"{len(x):,} images, {len(xv):,} held out, {args.epochs} epochs", flush=True)
    try:
        history = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xv, yv),
                              augment=augment, verbose=verbose, checkpoint=checkpoint, resume=args.resume)
    except TrainingDivergedError as e:
        again = " in a new run (--resume keeps the checkpoint's rate)" if args.resume else ""
        print(f"error: {e.summary} Try a lower --lr{again}; the rate was {opt.lr:g} there.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if trainer.checkpoint_epoch is None:
            state = "is unchanged" if os.path.exists(checkpoint) else "was not written"
            print(f"error: interrupted before the first epoch finished; {checkpoint} {state}", file=sys.stderr)
        else:
            print(f"error: interrupted; {checkpoint} holds epoch {trainer.checkpoint_epoch} of {args.epochs}, "
                  f"the last finished; continue with: {_resume_command(args, checkpoint)}", file=sys.stderr)
        return 130
    loss = history["val_loss"][-1]
    result = f"accuracy {history['val_accuracy'][-1]:.2%} (loss {loss:.4f})" if classify else f"mse {loss:.5f}"
    print(f"held-out {result} on {len(xv):,} images "
          f"after {trainer.epoch} epochs, {time.perf_counter() - t0:.1f} s; checkpoint: {checkpoint}")
    return 0


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by 'numbacnn train' (or Model.save)")
    _data_args(p, None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .._checkpoint import read_trainer_meta
    from ..model import Model
    from ..train import Trainer

    model = Model.load(args.checkpoint).to(args.device)
    if args.data is None:
        try:
            args.data = read_trainer_meta(args.checkpoint)[0]["info"]["data"]
        except (ValueError, KeyError, TypeError):
            raise CliError(f"{args.checkpoint} does not say which data it was trained on; give --data") from None
    _, (xv, yv) = _load(args)
    if tuple(xv.shape[1:]) != tuple(model.input_shapes[0]):
        raise CliError(f"{args.data} images are {xv.shape[1:]}, the model in {args.checkpoint} "
                       f"takes {tuple(model.input_shapes[0])}")
    classify = yv.dtype.kind in "iu"
    out = tuple(model.output_shape)
    if classify != (len(out) == 1) or not classify and out != tuple(yv.shape[1:]):
        want = "class labels" if classify else f"target images {tuple(yv.shape[1:])}"
        raise CliError(f"{args.data} has {want}, the model in {args.checkpoint} outputs {out}; evaluate it on "
                       f"the dataset it was trained on")
    result = Trainer(model, loss="cross_entropy" if classify else "mse").evaluate(
        xv, yv, batch_size=max(args.batch_size, 256))
    figures = f"accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f}" if classify else \
        f"mse {result['loss']:.5f}"
    print(f"{args.checkpoint} on {args.data} ({len(xv):,} held-out images): {figures}")
    return 0


def add_summary(p: argparse.ArgumentParser) -> None:
    from ..data import DATASET_SHAPES

    _model_args(p)
    p.add_argument("--data", choices=sorted(DATASET_SHAPES),
                   help="the model as 'numbacnn train --data DATA' builds it (default digits, as train's)")
    p.add_argument("--input-shape", type=_shape, help="C,H,W instead of a dataset's, e.g. 1,28,28 (C,L for "
                                                      "text_cnn, C,D,H,W for c3d_small)")
    p.add_argument("--num-classes", type=int, default=10)


def cmd_summary(args: argparse.Namespace) -> int:
    from ..data import DATASET_SHAPES

    if args.input_shape is not None and args.data is not None:
        raise CliError("give --data or --input-shape, not both")
    if args.input_shape is None:
        args.data = args.data or "digits"
        shape, source = DATASET_SHAPES[args.data], f"{args.data} images, as 'numbacnn train --data {args.data}'"
    else:
        shape, source = args.input_shape, "--input-shape"
    classes = {"num_classes": args.num_classes} if _takes(args.model, "num_classes") else {}
    model = _zoo_model(args, input_shape=shape, **classes)
    out = f"{args.num_classes} classes" if classes else f"output {'x'.join(map(str, model.output_shape))}"
    print(f"{args.model}: input {'x'.join(map(str, shape))} ({source}), {out}")
    print(model.summary())
    return 0
