"""Shape inference, in one place: per-sample output shapes of a graph's nodes.

``Graph.shapes`` (what blocks ask), ``Model`` (at construction) and the executor (once per
new input size) all call ``infer`` or ``declared``; errors name the node, as
``"<layer> node '<name>': ..."``.

Free sizes: an input dim declared ``None`` takes any size. Layers state their output shape for
concrete sizes only, so ``declared`` runs inference with every free dim set to each of two probe
sizes: an output dim that differs between the probes follows the free size (``None``), one that
agrees is fixed. The probes are even multiples of 32, far enough apart that a stride of up to 64
still gives different sizes, and legal for joins that need even sizes (a pooled branch added to a
strided one); a graph too deep for the first pair is tried on larger ones.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

from .layer import Shape, ShapeError

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["infer", "declared", "FreeShapes", "PROBES", "show", "fits", "expected", "is_free"]

#: Pairs of sizes a free dim is set to while inferring which output dims follow it.
PROBES = ((96, 160), (256, 384), (1024, 1536))


def show(shape: Sequence[int | None], batch: bool = False) -> str:
    """``(20, ?, ?)``: a declared shape, ``?`` where a dim follows a free input size;
    ``(N, 20, ?, ?)`` with ``batch``."""
    dims = ["N"] * batch + ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def is_free(shape: Sequence[int | None]) -> bool:
    return any(d is None for d in shape)


def fits(shape: Sequence[int], want: Sequence[int | None]) -> bool:
    """Whether a concrete per-sample ``shape`` is one that ``want`` (None: any size) allows."""
    return len(shape) == len(want) and all(s >= 1 if w is None else s == w for s, w in zip(shape, want))


def expected(want: Sequence[int | None]) -> str:
    """What an error says a batch for ``want`` must be: ``(N, 3, ?, ?) (? is any size)``."""
    return show(want, batch=True) + (" (? is any size)" if is_free(want) else "")


def _needed(g: "Graph", upto: Iterable[str] | None) -> set[str] | None:
    if upto is None:
        return None
    needed: set[str] = set()
    stack = list(upto)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(g.nodes[name].inputs)
    return needed


def infer(g: "Graph", inputs: Mapping[str, Shape], upto: Iterable[str] | None = None,
          note: str = "") -> dict[str, Shape]:
    """Concrete per-sample shapes of every node (or of ``upto`` and what they depend on), given
    the inputs' concrete shapes. ``note`` is added to errors (e.g. the probe size in use)."""
    needed = _needed(g, upto)
    shapes: dict[str, Shape] = {}
    for name, node in g.nodes.items():  # creation order is a topological order
        if needed is not None and name not in needed:
            continue
        if node.layer == "input":
            shapes[name] = tuple(int(s) for s in inputs[name])
            continue
        ins = [shapes[i] for i in node.inputs]
        try:
            out = node.obj.output_shape(*ins)
        except ShapeError as e:
            raise ShapeError(f"{node.layer} node '{name}': {e}{note}") from None
        if not isinstance(out, tuple) or not out or not all(isinstance(s, numbers.Integral) for s in out):
            raise TypeError(f"{node.layer} node '{name}': output_shape() returned {out!r}, expected a tuple of ints "
                            f"(a bug in the layer)")
        if any(s <= 0 for s in out):
            raise ShapeError(
                f"{node.layer} node '{name}': output shape {tuple(out)} from input shape(s) "
                f"{', '.join(map(str, ins))} is empty; the input is too small for this layer{note}"
            )
        shapes[name] = tuple(int(s) for s in out)
    return shapes


class FreeShapes(NamedTuple):
    """``shapes``: per node, None where a dim follows a free input size; ``probes``: two
    concrete inferences at different probe sizes (empty when no input has a free size)."""

    shapes: dict[str, tuple[int | None, ...]]
    probes: tuple[dict[str, Shape], ...]
    sizes: tuple[int, ...]


def _at(g: "Graph", size: int) -> dict[str, Shape]:
    return {n: tuple(size if d is None else d for d in g.nodes[n].config["shape"]) for n in g.inputs}


def declared(g: "Graph", upto: Iterable[str] | None = None) -> FreeShapes:
    """Shapes of the graph as declared: concrete where the inputs are, None where a dim
    follows an input's free size (see the module's docstring for how that is found)."""
    needed = _needed(g, upto)
    inputs = [n for n in g.inputs if needed is None or n in needed]
    if not any(is_free(g.nodes[n].config["shape"]) for n in inputs):
        return FreeShapes(infer(g, {n: g.nodes[n].config["shape"] for n in inputs}, upto), (), ())
    error: ShapeError | None = None
    for sizes in PROBES:
        try:
            probes = tuple(infer(g, _at(g, s), upto, f" (free input sizes set to {s} to infer shapes)")
                           for s in sizes)
        except ShapeError as e:
            error = e
            continue
        a, b = probes
        shapes = {n: tuple(None if da != db else da for da, db in zip(a[n], b[n])) if len(a[n]) == len(b[n])
                  else _ranks_differ(g, n, a[n], b[n]) for n in a}
        return FreeShapes(shapes, probes, sizes)
    assert error is not None
    raise error


def _ranks_differ(g: "Graph", name: str, a: Shape, b: Shape) -> Any:
    node = g.nodes[name]
    raise ShapeError(f"{node.layer} node '{name}': its output's rank follows the free input size "
                     f"({a} and {b} at two sizes); a graph's ranks must not depend on the input size")
