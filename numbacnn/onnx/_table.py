"""The two operator tables: layer name -> exporter, ONNX (domain, op_type) -> importer.

Built-in entries are registered by the ``_ops_*`` modules (one family each, both directions
side by side) with the ``exports`` and ``imports`` decorators. Plugin layers are found through
the layer registry: a class's ``onnx_export`` method, and its ``onnx_ops`` pairs with the
classmethod ``onnx_import``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .. import registry

Exporter = Callable[[Any], None]
Importer = Callable[[Any], None]

EXPORTERS: dict[str, Exporter] = {}
IMPORTERS: dict[tuple[str, str], Importer] = {}

_FAMILIES = ("_ops_act", "_ops_conv", "_ops_norm", "_ops_pool", "_ops_shape")
_loaded = False


def exports(*layers: str) -> Callable[[Exporter], Exporter]:
    """Register ``fn(ctx: ExportCtx)`` as the ONNX form of the layers named."""

    def register(fn: Exporter) -> Exporter:
        for layer in layers:
            EXPORTERS[layer] = fn
        return fn

    return register


def imports(*op_types: str, domain: str = "") -> Callable[[Importer], Importer]:
    """Register ``fn(ctx: ImportCtx)`` as the importer of the ONNX operators named."""

    def register(fn: Importer) -> Importer:
        for op in op_types:
            IMPORTERS[(domain, op)] = fn
        return fn

    return register


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for family in _FAMILIES:
            importlib.import_module(f"{__package__}.{family}")
        _loaded = True


def exporter(layer: Any) -> Exporter | None:
    """The export entry of a layer object: its own ``onnx_export`` hook, else the built-in
    table's entry for its name, else None."""
    hook = getattr(type(layer), "onnx_export", None)
    if callable(hook):
        return lambda ctx: hook(layer, ctx)
    _load_families()
    return EXPORTERS.get(type(layer).name)


def plugin_importers() -> dict[tuple[str, str], tuple[str, Importer]]:
    """(domain, op_type) -> (layer name, importer) for every registered layer that declares
    ``onnx_ops``; a plugin that fails to load is left out (``numbacnn layers`` shows why)."""
    found: dict[tuple[str, str], tuple[str, Importer]] = {}
    for name in registry.layer_names():
        try:
            cls = registry.get_layer(name)
        except registry.PluginError:
            continue
        hook = getattr(cls, "onnx_import", None)
        for key in getattr(cls, "onnx_ops", ()) or ():
            if callable(hook):
                found[(str(key[0]), str(key[1]))] = (name, hook)
    return found


def builtin_importers() -> dict[tuple[str, str], Importer]:
    _load_families()
    return IMPORTERS


def op_label(key: tuple[str, str]) -> str:
    return key[1] if not key[0] else f"{key[0]}.{key[1]}"
