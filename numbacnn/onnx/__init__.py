"""Model interchange through ONNX: ``export(model, path)`` and ``load(path) -> Model``.

Needs the ``onnx`` package (``pip install "numbacnn[onnx]"``), imported only when one of these
functions runs, so ``import numbacnn`` and ``numbacnn.onnx`` stay light.

Export writes the model in inference form (dropout as ONNX's Dropout, which is the identity
there; batch norm with its running statistics) at opset ``DEFAULT_OPSET`` unless told, with a
dynamic batch axis (``dim_param "N"``; an input's free sizes get dim_params too), ONNX node
names equal to the graph's node names, weights as initializers named ``node.param``, and
checks it with ``onnx.checker.check_model(full_check=True)`` before writing.

Import reads opsets 13 and newer; an input's free spatial sizes stay free (``_import_free``);
PyTorch's erf GELU before opset 20 is fused back into one Gelu (``_fuse``). Each ONNX node
becomes a numbacnn layer named after it (``/layer1/0/conv1/Conv`` -> ``layer1.0.conv1.Conv``);
constant-valued inputs (initializers, ``Constant`` nodes and the shape arithmetic PyTorch
emits: ``Shape``, ``Gather``, ``Concat``, ...) are folded, a ``Pad`` is folded into the
convolution or pooling it feeds, ``MatMul`` + ``Add`` of a constant becomes one ``linear``, and
``Identity`` disappears. Operators numbacnn has no layer for fail at load, naming the operator,
the ONNX node and what is supported.

Layers take part through two tables of small entries, one per layer name (export) and one
per ONNX ``(domain, op_type)`` (import), in the ``_ops_*`` modules. A plugin layer declares
its own: a method ``onnx_export(self, ctx: ExportCtx)`` and, for import, the class attribute
``onnx_ops = (("ai.numbacnn", "Swish"),)`` with a classmethod ``onnx_import(cls, ctx:
ImportCtx)``. Plugin operators live in the domain ``DOMAIN`` (``ai.numbacnn``), written as ONNX
functions of standard operators where they can be, so any runtime runs them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._base import DEFAULT_OPSET, DOMAIN, MIN_IMPORT_OPSET, OnnxError, UnsupportedOperatorError

if TYPE_CHECKING:
    from ..model import Model
    from ._export import ExportCtx  # noqa: F401 (for plugin authors' type hints)
    from ._import_ctx import ImportCtx  # noqa: F401

__all__ = ["export", "load", "OnnxError", "UnsupportedOperatorError", "ExportCtx", "ImportCtx", "DEFAULT_OPSET",
           "MIN_IMPORT_OPSET", "DOMAIN"]


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"numbacnn.onnx needs the onnx package, which is not installed ({e}); "
                          f"install it with: pip install \"numbacnn[onnx]\"") from None
    return onnx


def export(model: "Model", path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> None:
    """Write ``model`` to ``path`` as an ONNX model (batch axis dynamic), checked by
    ``onnx.checker`` first. A layer without an ONNX form fails, naming the layer and the node."""
    _require_onnx()
    from ._export import export_model

    export_model(model, path, opset)


def load(path: str | os.PathLike, input_shape: Any = None) -> "Model":
    """Read an ONNX model into a trainable ``nc.Model`` (float32 or float64, as its weights).

    The batch axis is always free. Sizes after the channels that the file leaves free
    (dim_params) stay free (``None`` in ``model.input_shapes``) unless ``input_shape``, the
    per-sample shape (C, H, W) (None where a size stays free; a dict ``{input name: shape}``
    for several inputs), fixes them. Where an importer would fix something from a free size
    (a linear after flatten, a Resize to sizes computed from the input's), the load fails
    naming the ONNX node and suggesting ``input_shape``.
    """
    _require_onnx()
    from ._import import load_model

    return load_model(path, input_shape)


def __getattr__(name: str) -> Any:
    # The contexts hooks are given, for plugins' type hints; neither module imports onnx.
    if name == "ExportCtx":
        from ._export import ExportCtx

        return ExportCtx
    if name == "ImportCtx":
        from ._import_ctx import ImportCtx

        return ImportCtx
    raise AttributeError(f"module 'numbacnn.onnx' has no attribute {name!r}")
