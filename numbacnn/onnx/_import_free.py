"""Free input sizes on import: a file whose input leaves its spatial sizes free (dim_params)
becomes a numbacnn graph with ``None`` there.

``load`` imports such a file twice, with the free sizes set to two probe sizes, and keeps the
result only if both passes built the same layers with the same configs and weights: then
nothing the importers fixed (a Reshape's target, a Resize's sizes, an auto_pad's padding)
came from the sizes, and ``nc.Model`` infers the free shapes as for any graph. Where the two
differ, the ONNX node is named and ``input_shape`` suggested.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import OnnxError
from ._import_ctx import LoadState, Record

__all__ = ["FIX_SIZES", "same_at_every_size"]

FIX_SIZES = ("pass input_shape=(C, H, W) to nc.onnx.load (numbacnn import --input-shape C,H,W) to import it at "
             "fixed sizes")


def _difference(a: Record, b: Record) -> tuple[str, Any, Any] | None:
    """What differs between one node's two records: (what, in a, in b), or None."""
    if (a.name, a.layer, a.inputs) != (b.name, b.layer, b.inputs):
        return "the layers it becomes", f"{a.layer} '{a.name}'", f"{b.layer} '{b.name}'"
    for key in sorted(a.config.keys() | b.config.keys()):
        if a.config.get(key) != b.config.get(key):
            return f"its {a.layer} layer's {key}", a.config.get(key), b.config.get(key)
    for kind, xa, xb in (("parameter", a.params, b.params), ("buffer", a.buffers, b.buffers)):
        for key in sorted(xa.keys() | xb.keys()):
            va, vb = xa.get(key), xb.get(key)
            if va is None or vb is None or va.shape != vb.shape:
                return f"its {kind} '{key}'", None if va is None else va.shape, None if vb is None else vb.shape
            if not np.array_equal(va, vb):
                return f"its {kind} '{key}'", "values", "other values"
    return None


def same_at_every_size(a: LoadState, b: LoadState) -> None:
    """Refuse, naming the ONNX node, what two passes at different probe sizes built differently."""
    def refuse(node: str, what: str, va: Any, vb: Any) -> OnnxError:
        return OnnxError(f"{a.path}: ONNX node '{node}': {what} depends on the input's free sizes ({va} with them "
                         f"set to {a.probe}, {vb} at {b.probe}), but numbacnn fixes it when it builds the model; "
                         f"{FIX_SIZES}")

    for ra, rb in zip(a.records, b.records):
        found = _difference(ra, rb)
        if found is not None:
            raise refuse(ra.onnx_node, *found)
    if len(a.records) != len(b.records):
        extra = (a.records if len(a.records) > len(b.records) else b.records)[min(len(a.records), len(b.records))]
        raise refuse(extra.onnx_node, "the number of layers", len(a.records), len(b.records))
    for key in sorted(a.size_notes.keys() | b.size_notes.keys()):
        if a.size_notes.get(key) != b.size_notes.get(key):
            raise refuse(key[0], key[1], f"input sizes {a.size_notes.get(key)}", f"{b.size_notes.get(key)}")
