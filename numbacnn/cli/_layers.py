"""``numbacnn layers``: the registered layers, and ``--check NAME``, the conformance kit on one."""

from __future__ import annotations

import argparse

from ._errors import CliError


def add_layers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", metavar="NAME", help="run the conformance kit on an installed layer")


def cmd_layers(args: argparse.Namespace) -> int:
    from .. import registry

    if args.check:
        return _check_layer(args.check)
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


def _check_layer(name: str) -> int:
    """Run the conformance kit on an installed layer with its declared example inputs."""
    from .. import registry
    from ..testing import check_installed_layer

    try:
        cls = registry.get_layer(name)
    except (registry.UnknownLayerError, registry.PluginError) as e:
        raise CliError(str(e)) from None
    report = check_installed_layer(cls)
    for line in report:
        print(line)
    return 0 if report.passed else 1
