"""The ``numbacnn`` command: ``layers``, the training commands and ``warmup``.

Every user error (bad arguments, missing files, unknown names) ends in one line on stderr and
a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Sequence

__all__ = ["main"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


def _cmd_layers(args: argparse.Namespace) -> int:
    from . import registry

    if args.check:
        return _check_layer_cmd(args.check)
    rows = [("layer", "provider", "version", "devices", "status")]
    for name in registry.layer_names():
        info = registry.layer_info(name)
        provider = "numbacnn (built-in)" if info["builtin"] else info["distribution"]
        status = "ok" if info["error"] is None else f"broken: {info['error']}"
        status += "".join(f"; refused: {why}" for why in info["refused"])
        rows.append((name, provider, info["version"], ",".join(info["devices"]) or "-", status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    return 0


def _check_layer_cmd(name: str) -> int:
    """Run the conformance kit on an installed layer with its declared example inputs."""
    from . import registry
    from .testing import check_installed_layer

    try:
        cls = registry.get_layer(name)
    except (registry.UnknownLayerError, registry.PluginError) as e:
        raise CliError(str(e)) from None
    report = check_installed_layer(cls)
    for line in report:
        print(line)
    return 0 if report.passed else 1


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def _add_layers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", metavar="NAME", help="run the conformance kit on an installed layer")


COMMANDS["layers"] = ("list registered layers: name, provider, version, devices", _add_layers, _cmd_layers)

from . import _cli_train  # noqa: E402  (argparse only; the handlers import the rest lazily)

COMMANDS["train"] = ("train a zoo model on a dataset (default: lenet5 on the bundled digits)",
                     _cli_train.add_train, _cli_train.cmd_train)
COMMANDS["evaluate"] = ("held-out accuracy and loss of a checkpoint", _cli_train.add_evaluate,
                        _cli_train.cmd_evaluate)
COMMANDS["summary"] = ("a zoo model's layers, output shapes, parameters and FLOPs", _cli_train.add_summary,
                       _cli_train.cmd_summary)


def _add_warmup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=("float32", "float64"),
                   help="the dtypes to compile for (default float32)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    p.add_argument("--quiet", action="store_true", help="only the final line")


def _cmd_warmup(args: argparse.Namespace) -> int:
    """Fill Numba's disk cache: every layer, loss, optimizer and zoo model, run once on tiny data."""
    from tqdm import tqdm

    from .warmup import WarmupItem, warmup

    bar: Any = None

    def progress(item: WarmupItem, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # the first item is done: caching and the device were fine
            if not args.quiet:
                print(f"warm-up for {', '.join(args.dtype)} on {args.device}: every layer, loss, optimizer "
                      f"and zoo model runs once on tiny data", flush=True)
            bar = tqdm(total=total, unit="item", desc="warm-up", file=sys.stderr,
                       disable=True if args.quiet else None, dynamic_ncols=True, leave=False)
        if not args.quiet:
            bar.write(f"  {item.line()}", file=sys.stdout)
        bar.set_postfix_str(item.name, refresh=False)
        bar.update(1)

    try:
        report = warmup(dtypes=args.dtype, devices=[args.device], progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(report.summary())
    print(f"Numba cache: {', '.join(report.cache_dirs) or 'none'}")
    return 0


COMMANDS["warmup"] = ("compile every kernel ahead of time into Numba's disk cache (fast later starts)",
                      _add_warmup, _cmd_warmup)

from . import _scaffold  # noqa: E402  (templates only; nothing heavy)

COMMANDS["new-plugin"] = ("write a ready-to-install layer plugin package (layer, kernels, tests)",
                          _scaffold.add_arguments, _scaffold.cmd_new_plugin)


def _compiling_shown(args: argparse.Namespace) -> Any:
    """First-use kernel compilation made visible in the commands that run kernels."""
    if args.command not in ("train", "evaluate") and not (args.command == "layers" and args.check):
        return contextlib.nullcontext()
    from ._compile_progress import compile_progress

    return compile_progress(enabled=not getattr(args, "quiet", False))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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

if __name__ == "__main__":
    # Run numbacnn.cli itself, not this __main__ copy: the commands raise numbacnn.cli.CliError.
    from numbacnn.cli import main as _main

    sys.exit(_main())
