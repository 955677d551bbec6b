"""What every module of ``numbacnn.onnx`` shares: the opset bounds, numbacnn's own ONNX domain
and the error classes (a leaf module, so the package and its parts never import each other)."""

from __future__ import annotations

__all__ = ["DEFAULT_OPSET", "MIN_IMPORT_OPSET", "DOMAIN", "OnnxError", "UnsupportedOperatorError"]

#: The opset ``export`` writes by default: the newest that onnx>=1.16 and current
#: onnxruntime releases (1.20 and later) both implement fully.
DEFAULT_OPSET = 21
#: The oldest opset ``load`` reads (and ``export`` writes).
MIN_IMPORT_OPSET = 13
#: The ONNX domain of numbacnn's own operators (plugin layers, and built-in forms with no
#: standard operator); version 1.
DOMAIN = "ai.numbacnn"


class OnnxError(ValueError):
    """An ONNX file could not be written or read: names the file, node or layer concerned."""


class UnsupportedOperatorError(OnnxError):
    """An ONNX operator, or one of its attributes, has no numbacnn equivalent (at load), or a
    layer has no ONNX form (at export)."""
