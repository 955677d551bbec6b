"""The ``numbacnn`` command: ``layers``, the training commands, ``warmup``, ``new-plugin``, and
``export`` / ``import`` (ONNX).

This package holds the parser, the command table and the error handling; each command group
has a module of its own (``_layers``, ``_train``, ``_warmup``, ``_onnx``; ``new-plugin`` is wired in
``numbacnn._scaffold`` beside its templates), and ``CliError`` lives in the leaf ``_errors``,
so no command module imports this one. Every user error (bad arguments, missing files,
unknown names) ends in one line on stderr and a non-zero exit, never a traceback. The same
``main`` runs as the console script, ``python -m numbacnn.cli`` and ``python -m numbacnn``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Sequence

from .. import _scaffold  # templates and argparse only; nothing heavy
from . import _layers, _onnx, _train, _warmup  # argparse only; the handlers import the rest lazily
from ._errors import CliError

__all__ = ["main", "build_parser", "CliError"]

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: dict[str, Command] = {
    "layers": ("list registered layers: name, provider, version, devices", _layers.add_layers, _layers.cmd_layers),
    "train": ("train a zoo model on a dataset (default: lenet5 on the bundled digits)",
              _train.add_train, _train.cmd_train),
    "evaluate": ("held-out accuracy and loss of a checkpoint", _train.add_evaluate, _train.cmd_evaluate),
    "summary": ("a zoo model's layers, output shapes, parameters and FLOPs", _train.add_summary,
                _train.cmd_summary),
    "warmup": ("compile every kernel ahead of time into Numba's disk cache (fast later starts)",
               _warmup.add_warmup, _warmup.cmd_warmup),
    "new-plugin": ("write a ready-to-install layer plugin package (layer, kernels, tests)",
                   _scaffold.add_arguments, _scaffold.cmd_new_plugin),
    "export": ("write a saved model (or checkpoint) as an ONNX file", _onnx.add_export, _onnx.cmd_export),
    "import": ("read an ONNX model, save it as a numbacnn model and print its summary", _onnx.add_import,
               _onnx.cmd_import),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


def _compiling_shown(args: argparse.Namespace) -> Any:
    """First-use kernel compilation made visible in the commands that run kernels."""
    if args.command not in ("train", "evaluate") and not (args.command == "layers" and args.check):
        return contextlib.nullcontext()
    from .._compile_progress import compile_progress

    return compile_progress(enabled=not getattr(args, "quiet", False))


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = _Parser(prog="numbacnn", description="numbacnn: CNNs on Numba kernels.")
    parser.add_argument("--version", action="version", version=f"numbacnn {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``numbacnn`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = argv  # for messages that give back a command line (train's resume hint)
        if args.command is None:
            parser.print_help()
            return 0
        with _compiling_shown(args):
            return COMMANDS[args.command][2](args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, LookupError, ImportError, RuntimeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
