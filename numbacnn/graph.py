"""The model DAG: nodes, builder methods for every registered layer, spec round trip.

``Graph`` only records structure (which layer, which hyper-parameters, which inputs); shapes
are inferred and parameters created by ``Model``. Nodes are kept in creation order, which is a
topological order because a node can only name inputs that already exist.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Sequence

from . import _shapes, registry
from .layer import Layer

__all__ = ["Graph", "Node", "GraphError"]

SPEC_FORMAT = "numbacnn.graph/1"


class GraphError(ValueError):
    """The graph is malformed: a bad node name, wrong inputs, a shape that does not fit."""


@dataclass(eq=False, frozen=True)
class Node:
    """One node of a graph; builder methods return it, and take it as an input."""

    name: str
    layer: str  # registry name, or "input"
    config: dict[str, Any]
    inputs: tuple[str, ...] = ()
    obj: Layer | None = field(default=None, repr=False)
    graph: "Graph | None" = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<{self.layer} node '{self.name}'>"


def make_layer(layer: str, name: str, config: dict[str, Any]) -> Layer:
    """Instantiate a registered layer for a node, with errors that name the node."""
    cls = registry.get_layer(layer)
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise GraphError(f"{layer} node '{name}': {e}") from None


class Graph:
    """A directed acyclic graph of layers: ``g.conv2d(x, ...)`` adds a node and returns it."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._prefix: list[str] = []
        self._counts: dict[str, int] = {}

    # building ------------------------------------------------------------------------------
    def _new_name(self, layer: str, name: str | None) -> str:
        if name is None:
            count = self._counts.get(layer, 0)
            while True:
                count += 1
                name = f"{layer}_{count}"
                if ".".join([*self._prefix, name]) not in self.nodes:
                    break
            self._counts[layer] = count
        if not isinstance(name, str) or not name or any(c in name for c in " /:"):
            raise GraphError(f"node name {name!r} is not valid: use letters, digits, '_' or '.'")
        full = ".".join([*self._prefix, name])
        if full in self.nodes:
            raise GraphError(f"node name '{full}' is used twice; every node needs its own name")
        return full

    def _ref(self, x: Any, layer: str, name: str) -> str:
        if isinstance(x, Node):
            if x.graph is not self:
                raise GraphError(f"{layer} node '{name}': input '{x.name}' belongs to another graph")
            return x.name
        if isinstance(x, str) and x in self.nodes:
            return x
        raise GraphError(
            f"{layer} node '{name}': expected a node of this graph as input, found {x!r}"
        )

    def input(self, shape: Sequence[int | None], name: str = "input") -> Node:
        """Add a graph input of per-sample shape ``shape`` (e.g. (C, H, W)); batch is free, and
        so is any dim given as None: ``g.input((3, None, None))`` takes any height and width."""
        full = self._new_name("input", name)
        try:
            shape = tuple(None if s is None else int(s) for s in shape)
        except TypeError:
            raise GraphError(f"input '{full}': shape must be a tuple of ints (or None for a free size), "
                             f"found {shape!r}") from None
        if not shape or any(s is not None and s <= 0 for s in shape):
            raise GraphError(f"input '{full}': shape must be positive sizes (or None for a free size), found {shape}")
        node = Node(full, "input", {"shape": list(shape)}, graph=self)
        self.nodes[full] = node
        self.inputs.append(full)
        return node

    def layer(self, layer: str, *inputs: Any, name: str | None = None, **config: Any) -> Node:
        """Add a node of registered layer ``layer`` reading ``inputs``: ``g.layer("relu", h)``."""
        full = self._new_name(layer, name)
        refs = tuple(self._ref(x, layer, full) for x in inputs)
        return self._add(make_layer(layer, full, config), refs, full)

    def add_layer(self, obj: Layer, *inputs: Any, name: str | None = None) -> Node:
        """Add a node for a layer instance (one not in the registry, e.g. while testing it)."""
        layer = type(obj).name
        full = self._new_name(layer, name)
        return self._add(obj, tuple(self._ref(x, layer, full) for x in inputs), full)

    def _add(self, obj: Layer, refs: tuple[str, ...], full: str) -> Node:
        layer = type(obj).name
        want = type(obj).n_inputs
        if (want is None and len(refs) < 2) or (want is not None and len(refs) != want):
            expected = "two or more inputs" if want is None else f"{want} input(s)"
            raise GraphError(f"{layer} node '{full}': expected {expected}, found {len(refs)}")
        node = Node(full, layer, obj.config, refs, obj=obj, graph=self)
        self.nodes[full] = node
        return node

    def output(self, *nodes: Any) -> None:
        """Mark the graph's output(s), once: ``g.output(h)``, or ``g.output(a, b)`` for several."""
        if not nodes:
            raise GraphError("output() needs at least one node")
        if self.outputs:
            # A second call replacing the first (or adding to it) would each surprise someone.
            raise GraphError(
                f"outputs already set to {', '.join(repr(o) for o in self.outputs)}; "
                f"call output(a, b) once for several outputs"
            )
        self.outputs = [self._ref(n, "output", "output") for n in nodes]

    @contextlib.contextmanager
    def scope(self, prefix: str) -> Iterator[None]:
        """Prefix the names of nodes added inside (``"inc3a.conv1"``): how blocks name theirs."""
        self._prefix.append(prefix)
        try:
            yield
        finally:
            self._prefix.pop()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        try:
            registry.get_layer(attr)
        except registry.UnknownLayerError as e:
            raise AttributeError(str(e)) from None

        def build(*inputs: Any, name: str | None = None, **config: Any) -> Node:
            return self.layer(attr, *inputs, name=name, **config)

        build.__name__ = attr
        return build

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(registry.layer_names()))

    # shapes ----------------------------------------------------------------------------------
    def shapes(self, upto: Iterable[str] | None = None) -> dict[str, tuple[int | None, ...]]:
        """Per-sample output shape of every node (or of the nodes ``upto`` and what they depend
        on); a dim that follows a free input size (None) is None. Shape errors name the node."""
        return _shapes.declared(self, upto).shapes

    # the model's copy -----------------------------------------------------------------------
    def frozen(self) -> "Graph":
        """A read-only copy of what the outputs need: the inputs and the nodes they depend on,
        each with its own copy of the layer. ``Model`` keeps one, so editing this graph later
        cannot reach a model built from it. Without ``output()``, the one node that nothing
        reads is the output (as in a Sequential model); several such nodes are an error."""
        if not self.inputs:
            raise GraphError("the graph has no input: start it with g.input((C, H, W))")
        outputs = self.outputs or [_sink(self)]
        needed: set[str] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(self.nodes[name].inputs)
        for name in self.inputs:
            if name not in needed:
                raise GraphError(f"input '{name}' does not reach any output")
        return FrozenGraph(self, needed, outputs)

    # spec ------------------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        """A JSON-able description of the graph, recording which distribution gave each layer."""
        nodes = []
        for node in self.nodes.values():
            entry: dict[str, Any] = {"name": node.name, "layer": node.layer, "config": _thaw(node.config),
                                     "inputs": list(node.inputs)}
            if node.layer != "input":
                info = registry.layer_info(node.layer)
                entry["provider"] = {"distribution": info["distribution"], "version": info["version"]}
            nodes.append(entry)
        return {"format": SPEC_FORMAT, "nodes": nodes, "inputs": list(self.inputs),
                "outputs": list(self.outputs)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Graph":
        """Rebuild a graph from ``to_spec()``; a layer whose plugin is missing is named, and so
        is whatever part of a malformed spec is wrong."""
        if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
            raise GraphError(f"not a numbacnn graph spec: expected format {SPEC_FORMAT!r}, found {found!r}")
        _check_spec(spec)
        g = cls()
        for entry in spec["nodes"]:
            name, layer = entry["name"], entry["layer"]
            if layer == "input":
                node = Node(name, "input", dict(entry["config"]), graph=g)
                g.nodes[name] = node
                continue
            _check_provider(layer, entry.get("provider"))
            for ref in entry["inputs"]:
                if ref not in g.nodes:
                    raise GraphError(f"{layer} node '{name}': input '{ref}' is not defined before it")
            obj = make_layer(layer, name, entry["config"])
            g.nodes[name] = Node(name, layer, obj.config, tuple(entry["inputs"]), obj=obj, graph=g)
        g.inputs = list(spec["inputs"])
        g.outputs = list(spec["outputs"])
        return g


_NODE_KEYS = {"name": str, "layer": str, "config": dict, "inputs": list}


def _check_spec(spec: dict[str, Any]) -> None:
    """The structure of a graph spec, checked before any node is built (bad JSON, hand edits)."""
    for key in ("nodes", "inputs", "outputs"):
        if not isinstance(spec.get(key), list):
            found = "nothing" if key not in spec else type(spec[key]).__name__
            raise GraphError(f"graph spec: '{key}' must be a list, found {found}")
    names: set[str] = set()
    for i, entry in enumerate(spec["nodes"]):
        if not isinstance(entry, dict):
            raise GraphError(f"graph spec: node {i} must be a dict with keys {', '.join(_NODE_KEYS)}, "
                             f"found {type(entry).__name__} {entry!r:.40}")
        who = f"graph spec: node {i} ({entry.get('name')!r})"
        for key, kind in _NODE_KEYS.items():
            if not isinstance(entry.get(key), kind):
                found = "nothing" if key not in entry else type(entry[key]).__name__
                raise GraphError(f"{who}: '{key}' must be a {kind.__name__}, found {found}")
        if not all(isinstance(r, str) for r in entry["inputs"]):
            raise GraphError(f"{who}: 'inputs' must list node names, found {entry['inputs']!r}")
        if entry["name"] in names:
            raise GraphError(f"{who}: the name is used twice; every node needs its own name")
        names.add(entry["name"])
        if entry["layer"] == "input":
            shape = entry["config"].get("shape")
            if (not isinstance(shape, list) or not shape
                    or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
                raise GraphError(f"{who}: an input's config needs 'shape', a list of positive sizes "
                                 f"(null for a free size), found {shape!r}")
    for key in ("inputs", "outputs"):
        for ref in spec[key]:
            if not isinstance(ref, str) or ref not in names:
                raise GraphError(f"graph spec: '{key}' names {ref!r}, which is not a node of the spec")
    for ref in spec["inputs"]:
        if next(e for e in spec["nodes"] if e["name"] == ref)["layer"] != "input":
            raise GraphError(f"graph spec: 'inputs' names {ref!r}, which is not an input node")


def _sink(g: Graph) -> str:
    read = {ref for node in g.nodes.values() for ref in node.inputs}
    sinks = [n for n, node in g.nodes.items() if n not in read and node.layer != "input"]
    if len(sinks) == 1:
        return sinks[0]
    if not sinks:
        raise GraphError("the graph has no output: add layers after the input and mark the result "
                         "with g.output(h)")
    raise GraphError(f"the graph has no output and {len(sinks)} nodes that no other node reads "
                     f"({', '.join(repr(n) for n in sinks)}): mark the output with g.output(h), or "
                     f"g.output(a, b) for several")


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k: _thaw(v) for k, v in value.items()}
    return value


class FrozenGraph(Graph):
    """A model's own graph: read-only nodes, inputs and outputs; builder methods refuse."""

    def __init__(self, source: Graph, needed: set[str], outputs: list[str]) -> None:
        super().__init__()
        nodes = {}
        for name, node in source.nodes.items():
            if name in needed:
                obj = None if node.obj is None else copy.deepcopy(node.obj)
                nodes[name] = Node(name, node.layer, _freeze(node.config), node.inputs, obj=obj, graph=self)
        self.nodes = MappingProxyType(nodes)  # type: ignore[assignment]
        self.inputs = tuple(source.inputs)  # type: ignore[assignment]
        self.outputs = tuple(outputs)  # type: ignore[assignment]
        self._sealed = True

    def frozen(self) -> "Graph":
        return self

    def _refused(self, what: str) -> GraphError:
        return GraphError(f"cannot {what}: this is a model's graph, a frozen copy taken by nc.Model(g); "
                          f"edit the graph you built and make a new nc.Model from it")

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise self._refused(f"set graph.{key}")
        super().__setattr__(key, value)

    def _new_name(self, layer: str, name: str | None) -> str:
        raise self._refused(f"add a '{layer}' node")

    def output(self, *nodes: Any) -> None:
        raise self._refused("change the outputs")


def _check_provider(layer: str, provider: dict[str, str] | None) -> None:
    try:
        info = registry.layer_info(layer)
    except registry.UnknownLayerError:
        if provider and provider.get("distribution") not in (None, "numbacnn", "__main__"):
            dist, version = provider["distribution"], provider["version"]
            if registry.plugins_disabled():
                raise registry.PluginError(
                    f"layer '{layer}' is provided by {dist} {version}, but plugin discovery is off "
                    f"({registry.DISABLE_ENV} is set)"
                ) from None
            raise registry.PluginError(
                f"layer '{layer}' is provided by {dist} {version}, which is not installed"
            ) from None
        raise
    if provider and provider.get("distribution") == info["distribution"]:
        if provider.get("version") != info["version"]:
            warnings.warn(
                f"layer '{layer}' was saved with {provider['distribution']} {provider['version']}; "
                f"installed is {info['version']}",
                stacklevel=3,
            )
