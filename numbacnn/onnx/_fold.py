"""Constant folding on import: the values an ONNX graph computes without the data.

Initializers, ``Constant`` nodes and any standard operator whose inputs are all constant are
evaluated once with ``onnx.reference`` (the ONNX reference implementation). Shapes are the
one thing computed from the data that folds too: ``Shape(x)`` knows every size of ``x`` but
the batch's, so it is evaluated twice, with the batch size set to two sentinel values, and a
result that differs between the two depends on the batch: an entry equal to the sentinel in
both is the batch size itself (how PyTorch writes ``x.view(x.size(0), -1)``), anything else
is refused where a constant is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Const", "BATCH", "fold_node", "shape_of", "batch_dims"]

#: The batch size in the two evaluations of batch-dependent shape arithmetic.
SENTINELS = (7919, 7927)
#: Batch-dependent inputs are shape vectors: small integer tensors. Larger ones, or ops
#: that would allocate by them (ConstantOfShape of a batch-sized shape), are not folded.
_MAX_DUAL = 16
_ALLOCATING = {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Pad"}


class _Batch:
    def __repr__(self) -> str:
        return "N"


#: The batch size, where ``batch_dims`` finds it in a shape vector.
BATCH = _Batch()


@dataclass(frozen=True)
class Const:
    """A folded value: ``a`` and ``b`` are the same array unless it depends on the batch size
    (then they are its values at the two sentinel batch sizes)."""

    a: np.ndarray
    b: np.ndarray
    source: str = ""  # the ONNX node (or "initializer") it came from, for messages

    @property
    def dual(self) -> bool:
        return self.a is not self.b

    @staticmethod
    def of(value: Any, source: str = "") -> "Const":
        arr = np.asarray(value)
        return Const(arr, arr, source)


def batch_dims(c: Const) -> list[Any] | None:
    """A batch-dependent shape vector as a list of ints with ``BATCH`` where the batch size
    is; None when some entry depends on the batch in another way (e.g. N * C)."""
    out: list[Any] = []
    for x, y in zip(np.ravel(c.a).tolist(), np.ravel(c.b).tolist()):
        if x == y:
            out.append(int(x))
        elif (x, y) == SENTINELS:
            out.append(BATCH)
        else:
            return None
    return out


def shape_of(onnx_shape: tuple[int, ...], start: int = 0, end: int | None = None) -> Const:
    """``Shape(x)`` for a value of per-sample ``onnx_shape`` (all sizes known)."""
    a = np.array([SENTINELS[0], *onnx_shape], np.int64)
    b = np.array([SENTINELS[1], *onnx_shape], np.int64)
    sl = slice(start, end)
    return Const(a[sl], b[sl], "Shape")


def foldable(node: Any, inputs: list[Const | None]) -> str | None:
    """Why a node whose inputs are all constant cannot be folded (None when it can)."""
    duals = [c for c in inputs if c is not None and c.dual]
    if not duals:
        return None
    if node.op_type in _ALLOCATING:
        return "its input depends on the batch size"
    if any(c.a.size > _MAX_DUAL or c.a.dtype.kind not in "iu" for c in duals):
        return "it computes on data that depends on the batch size"
    return None


def fold_node(node: Any, inputs: list[Const | None], opset: int) -> list[Const]:
    """Evaluate one standard node on constant inputs (each None: an omitted optional input)."""
    from onnx.reference import ReferenceEvaluator

    import onnx

    names = [f"in{i}" if c is not None else "" for i, c in enumerate(inputs)]
    body = onnx.helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))],
                                 domain=node.domain)
    body.attribute.extend(node.attribute)
    graph = onnx.helper.make_graph([body], "fold", [], [onnx.helper.make_empty_tensor_value_info(f"out{i}")
                                                        for i in range(len(node.output))])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    runner = ReferenceEvaluator(model)

    def run(pick: int) -> list[np.ndarray]:
        feeds = {n: (c.a if pick == 0 else c.b) for n, c in zip(names, inputs) if c is not None}
        return [np.asarray(v) for v in runner.run(None, feeds)]

    first = run(0)
    second = run(1) if any(c is not None and c.dual for c in inputs) else first
    out = []
    for x, y in zip(first, second):
        same = x is y or (x.shape == y.shape and np.array_equal(x, y))
        out.append(Const(x, x if same else y, node.name or node.op_type))
    return out
