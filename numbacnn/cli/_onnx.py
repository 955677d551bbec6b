"""``numbacnn export CHECKPOINT OUT.onnx`` and ``numbacnn import IN.onnx OUT.npz``: a saved
model to ONNX and back (``numbacnn.onnx``). Neither replaces an existing output file unless
given ``--overwrite``; both need the onnx package (``pip install "numbacnn[onnx]"``).
"""

from __future__ import annotations

import argparse
import os

from ._errors import CliError
from ._train import _shape


def _refuse_overwrite(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise CliError(f"{path} exists: add --overwrite to replace it")


def add_export(p: argparse.ArgumentParser) -> None:
    from ..onnx import DEFAULT_OPSET

    p.add_argument("checkpoint", help="a model written by Model.save, or a training checkpoint (.npz)")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset to write (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")


def cmd_export(args: argparse.Namespace) -> int:
    from ..model import Model
    from ..onnx import export

    _refuse_overwrite(args.output, args.overwrite)
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"{args.checkpoint}: no such file")
    model = Model.load(args.checkpoint)
    export(model, args.output, opset=args.opset)
    print(f"wrote {args.output}: {len(model.order)} nodes, {model.param_count():,} parameters, opset {args.opset}")
    return 0


def add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.onnx", help="the ONNX model to read")
    p.add_argument("output", metavar="OUT.npz", help="where to save the numbacnn model (Model.save's format)")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                   help="fix the per-sample input size (a file's free sizes otherwise stay free)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists")


def cmd_import(args: argparse.Namespace) -> int:
    from ..onnx import load

    _refuse_overwrite(args.output, args.overwrite)
    model = load(args.input, input_shape=args.input_shape)
    model.save(args.output)
    print(model.summary())
    print(f"wrote {args.output}")
    return 0
