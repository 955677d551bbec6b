"""Layer registry: name -> "module:Class" from the built-in table and the entry points.

Nothing is imported until a layer is used. Built-ins come from ``numbacnn.layers.BUILTIN``;
third-party layers from the entry-point group ``numbacnn.layers`` (entry name = layer name,
value = "package.module:ClassName"); notebook layers from ``@register_layer``. Every class,
whatever its origin, goes through the same contract check when it is first loaded.
Built-in names are reserved: a plugin entry point that claims one is refused (a
``PluginWarning`` naming its distribution when discovered, and in ``layer_info``) and the
built-in keeps working. ``NUMBACNN_DISABLE_PLUGINS=1`` turns entry-point discovery off.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .device import DEVICES
from .layer import Layer, has_kernels, kernel_stem

__all__ = [
    "UnknownLayerError", "PluginError", "LayerCollisionError", "LayerContractError", "PluginWarning",
    "layer_names", "get_layer", "layer_info", "register_layer", "layer_devices", "refresh",
]

ENTRY_POINT_GROUP = "numbacnn.layers"
DISABLE_ENV = "NUMBACNN_DISABLE_PLUGINS"


class UnknownLayerError(LookupError):
    """No layer of that name is registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class PluginError(ImportError):
    """A plugin layer could not be loaded (its import failed, or it breaks the contract)."""


class LayerCollisionError(PluginError):
    """Two providers claim one layer name."""


class LayerContractError(TypeError):
    """A layer class misses part of the layer contract."""


class PluginWarning(UserWarning):
    """A plugin entry point was refused (it claims a built-in layer name)."""


@dataclass
class _Entry:
    name: str
    target: str  # "module:Class"
    distribution: str
    version: str
    builtin: bool = False
    cls: type[Layer] | None = None
    error: str | None = None
    rivals: list[str] = field(default_factory=list)  # other providers of the same name
    refused: list[str] = field(default_factory=list)  # plugin entries claiming this built-in name


_entries: dict[str, _Entry] | None = None


def _numbacnn_version() -> str:
    from ._version import __version__

    return __version__


def plugins_disabled() -> bool:
    """``NUMBACNN_DISABLE_PLUGINS`` turns entry-point discovery off."""
    return os.environ.get(DISABLE_ENV, "0").lower() in ("1", "true", "yes")


def _discover() -> dict[str, _Entry]:
    global _entries
    if _entries is not None:
        return _entries
    from .layers import BUILTIN

    version = _numbacnn_version()
    entries = {n: _Entry(n, t, "numbacnn", version, builtin=True) for n, t in BUILTIN.items()}
    if not plugins_disabled():
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dname = dist.metadata["Name"] if dist is not None else "unknown"
            dversion = dist.version if dist is not None else "unknown"
            new = _Entry(ep.name, ep.value, dname, dversion)
            old = entries.get(ep.name)
            if old is None:
                entries[ep.name] = new
            elif (old.distribution, old.target) == (dname, ep.value):
                continue  # the same distribution seen twice on the path
            elif old.builtin:
                old.refused.append(_refusal(ep.name, f"{dname} {dversion}", ep.value))
                warnings.warn(old.refused[-1], PluginWarning, stacklevel=2)
            else:
                old.rivals.append(f"{dname} {dversion} ({ep.value})")
    _entries = entries
    return entries


def _refusal(name: str, provider: str, target: str) -> str:
    return (f"plugin {provider} registers layer '{name}' ({target}), a built-in name: built-in names "
            f"are reserved, so that entry is refused and the built-in '{name}' is used. Rename the "
            f"layer (its entry point in the '{ENTRY_POINT_GROUP}' group and its class's name), or "
            f"uninstall {provider.split()[0]}.")


def refresh() -> None:
    """Forget what was discovered (after installing a plugin in a running process)."""
    global _entries
    registered = {n: e for n, e in (_entries or {}).items() if e.distribution == "__main__"}
    _entries = None
    _discover().update(registered)


def _overrides(cls: type[Layer], method: str) -> bool:
    return getattr(cls, method, None) is not getattr(Layer, method)


def check_contract(cls: Any, name: str | None = None) -> list[str]:
    """What ``cls`` lacks of the layer contract (an empty list when complete).

    Each direction is either written once (``forward``/``backward`` overridden, with kernels
    in ``<stem>_cpu``, ``ctx.kernels``) or per device (``forward_cpu``/``backward_cpu``, and
    ``forward_cuda``/``backward_cuda`` for a GPU); the CPU is never optional.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        return [f"{cls!r} is not a subclass of numbacnn.Layer"]
    problems = []
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        problems.append(f"class attribute 'name' must be an identifier, found {cls.name!r}")
    elif name is not None and cls.name != name:
        problems.append(f"class attribute name={cls.name!r} differs from its registry name {name!r}")
    if not callable(getattr(cls, "output_shape", None)):
        problems.append("method output_shape() is missing")
    neutral = [m for m in ("forward", "backward") if _overrides(cls, m)]
    for method in ("forward", "backward"):
        if method not in neutral and not callable(getattr(cls, method + "_cpu", None)):
            problems.append(f"method {method}() is missing (or {method}_cpu(), written per device)"
                            if neutral or not _per_device(cls) else f"method {method}_cpu() is missing")
    if not neutral:
        has_fwd, has_bwd = (callable(getattr(cls, m, None)) for m in ("forward_cuda", "backward_cuda"))
        if has_fwd != has_bwd:
            problems.append("forward_cuda() and backward_cuda() must come together")
    if neutral:
        stem = cls.kernels
        if stem is not None and not isinstance(stem, str):
            problems.append(f"class attribute 'kernels' must be a module path, '' or None, found {stem!r}")
        elif not has_kernels(cls, "cpu"):
            problems.append(
                f"no CPU kernels: module {kernel_stem(cls)}_cpu was not found (write it beside the layer, "
                f"name another stem with kernels = 'package.stem', or set kernels = None for a layer "
                f"that calls no kernels)")
    return problems


def _per_device(cls: type[Layer]) -> bool:
    return any(callable(getattr(cls, f"{m}_{d}", None)) for m in ("forward", "backward") for d in DEVICES)


def layer_devices(cls: type[Layer]) -> list[str]:
    """The devices ``cls`` runs on: those where both directions have what they call (a device
    method, or the kernel module of a method written once). Imports no kernels."""
    def ready(method: str, device: str) -> bool:
        if _overrides(cls, method):
            return has_kernels(cls, device)
        return callable(getattr(cls, f"{method}_{device}", None))

    return [d for d in DEVICES if ready("forward", d) and ready("backward", d)]


def _load(entry: _Entry) -> type[Layer]:
    if entry.rivals:
        providers = [f"{entry.distribution} {entry.version} ({entry.target})", *entry.rivals]
        raise LayerCollisionError(
            f"layer '{entry.name}' is provided by more than one distribution: "
            f"{'; '.join(providers)}. Uninstall all but one of them."
        )
    if entry.cls is not None:
        return entry.cls
    if entry.error is not None:
        raise PluginError(entry.error)
    module_name, _, attr = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as e:
        entry.error = (
            f"layer '{entry.name}' from {entry.distribution} {entry.version} failed to load "
            f"({entry.target}): {type(e).__name__}: {e}"
        )
        raise PluginError(entry.error) from e
    problems = check_contract(cls, entry.name)
    if problems:
        entry.error = (
            f"layer '{entry.name}' from {entry.distribution} {entry.version} breaks the layer "
            f"contract: {'; '.join(problems)}"
        )
        raise PluginError(entry.error)
    entry.cls = cls
    return cls


def layer_names() -> list[str]:
    """Sorted names of every registered layer (built-in, plugin, in-process)."""
    return sorted(_discover())


def _unknown(name: str) -> UnknownLayerError:
    entries = _discover()
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.6)
    builtin = ", ".join(sorted(n for n, e in entries.items() if e.builtin))
    plugins = sorted({f"{e.distribution} {e.version}" for e in entries.values() if not e.builtin})
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownLayerError(
        f"No layer '{name}'.{hint} Built-in: {builtin}; plugins found: "
        f"{', '.join(plugins) if plugins else 'none'}. Is its package installed?"
    )


def get_layer(name: str) -> type[Layer]:
    """The Layer class registered under ``name``."""
    entry = _discover().get(name)
    if entry is None:
        raise _unknown(name)
    return _load(entry)


def layer_info(name: str) -> dict[str, Any]:
    """Name, class path, providing distribution and version, devices (or the load error), and
    ``refused``: the plugin entries refused for claiming this built-in name."""
    entry = _discover().get(name)
    if entry is None:
        raise _unknown(name)
    info: dict[str, Any] = {
        "name": name, "class": entry.target, "distribution": entry.distribution,
        "version": entry.version, "builtin": entry.builtin, "devices": [], "error": None,
        "refused": list(entry.refused),
    }
    try:
        info["devices"] = layer_devices(_load(entry))
    except PluginError as e:
        info["error"] = str(e)
    return info


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Register a Layer subclass in this process (a decorator). Re-running the same
    definition (a notebook cell) replaces it; any other clash is an error naming both."""
    problems = check_contract(cls)
    if problems:
        raise LayerContractError(f"cannot register {cls.__qualname__}: {'; '.join(problems)}")
    entries = _discover()
    target = f"{cls.__module__}:{cls.__qualname__}"
    old = entries.get(cls.name)
    if old is not None and old.target != target:
        raise LayerCollisionError(
            f"cannot register {target} as layer '{cls.name}': the name is already provided by "
            f"{old.distribution} {old.version} ({old.target}). Choose another name."
        )
    entries[cls.name] = _Entry(cls.name, target, "__main__", "0", cls=cls)
    return cls


def unregister_layer(name: str) -> None:
    """Remove an in-process registration (tests, notebooks)."""
    entry = _discover().get(name)
    if entry is not None and entry.distribution == "__main__":
        del _discover()[name]
