"""numbacnn: a convolutional-network engine whose layers run on Numba-compiled kernels.

The public face is small: build a ``Graph``, wrap it in a ``Model``, train it with a
``Trainer``; layers are found through the registry (``layer_names``, ``get_layer``,
``layer_info``, ``register_layer``); a layer is a ``Layer`` subclass whose forward and
backward see a ``Ctx``. Submodules ``blocks``, ``zoo``, ``losses``, ``optim``, ``data``,
``testing``, ``kernels`` (the kernel decorators, for layer authors) and ``onnx`` (model
interchange) load on first use, so ``import numbacnn`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .device import DeviceError
from .graph import Graph, GraphError
from .layer import Ctx, Layer, ShapeError
from .model import Model
from .registry import (
    PluginError,
    UnknownLayerError,
    get_layer,
    layer_info,
    layer_names,
    register_layer,
)

__all__ = [
    "Graph", "Model", "Layer", "Ctx", "Trainer",
    "layer_names", "get_layer", "layer_info", "register_layer",
    "UnknownLayerError", "PluginError", "ShapeError", "GraphError", "DeviceError",
    "blocks", "zoo", "losses", "optim", "data", "augment", "testing", "kernels", "onnx",
]

_SUBMODULES = {"blocks", "zoo", "losses", "optim", "data", "augment", "testing", "kernels", "onnx"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Trainer":
        from .train import Trainer

        return Trainer
    raise AttributeError(f"module 'numbacnn' has no attribute {name!r}")
