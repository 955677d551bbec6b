"""Operator patterns that exporters write for one layer, fused back into that layer's operator
before the nodes are visited.

GELU: before opset 20 ONNX has no Gelu, and PyTorch writes ``nn.GELU()`` (the erf form) as
``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``. Those five nodes, their intermediate values
read by nothing else, become one ``Gelu`` node named after the block (``/act/Gelu``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["fuse_patterns"]


def _constants(proto: Any) -> dict[str, np.ndarray]:
    import onnx

    found = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    found[node.output[0]] = onnx.numpy_helper.to_array(a.t)
                elif a.name == "value_float":
                    found[node.output[0]] = np.array(a.f)
    return found


def _scalar(consts: dict[str, np.ndarray], name: str, want: float) -> bool:
    v = consts.get(name)
    return v is not None and v.size == 1 and math.isclose(float(v.ravel()[0]), want, rel_tol=1e-6)


def _other(node: Any, name: str) -> str | None:
    """The input of a two-input node that is not ``name`` (None if ``name`` is not one of them)."""
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1] if ins[0] == name else ins[0]


def _gelu_at(erf: Any, producer: dict[str, Any], readers: dict[str, list[Any]],
             consts: dict[str, np.ndarray]) -> tuple[str, list[Any]] | None:
    """(x, the five nodes) when ``erf`` is the middle of PyTorch's erf GELU, else None."""
    def only_reader(name: str, op: str) -> Any:
        found = readers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    div = producer.get(erf.input[0])
    if div is None or div.op_type not in ("Div", "Mul") or len(readers.get(erf.input[0], [])) != 1:
        return None
    x, c = div.input[0], div.input[1]
    if not (_scalar(consts, c, math.sqrt(2)) if div.op_type == "Div" else _scalar(consts, c, math.sqrt(0.5))):
        return None
    add = only_reader(erf.output[0], "Add")
    if add is None or not _scalar(consts, _other(add, erf.output[0]) or "", 1.0):
        return None
    mul = only_reader(add.output[0], "Mul")
    if mul is None or _other(mul, add.output[0]) != x:
        return None
    half = only_reader(mul.output[0], "Mul")
    if half is None or not _scalar(consts, _other(half, mul.output[0]) or "", 0.5):
        return None
    return x, [div, erf, add, mul, half]


def fuse_patterns(proto: Any) -> Any:
    """``proto`` with each pattern replaced by its one operator (in place; returned)."""
    import onnx

    nodes = list(proto.graph.node)
    if not any(n.op_type == "Erf" for n in nodes):
        return proto
    consts = _constants(proto)
    producer = {out: n for n in nodes for out in n.output}
    readers: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    for out in proto.graph.output:  # a graph output is read from outside: never fused away
        readers.setdefault(out.name, []).append(out)
    replace: dict[int, Any] = {}
    drop: set[int] = set()
    taken = {n.name for n in nodes}
    for erf in nodes:
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        found = _gelu_at(erf, producer, readers, consts)
        if found is None:
            continue
        x, block = found
        base = erf.name.rpartition("/")[0] + "/Gelu" if "/" in erf.name else (erf.name or "gelu") + "_gelu"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        replace[id(block[-1])] = onnx.helper.make_node("Gelu", [x], [block[-1].output[0]], name=name)
        drop.update(id(n) for n in block[:-1])
    if replace:
        kept = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
        del proto.graph.node[:]
        proto.graph.node.extend(kept)
    return proto
