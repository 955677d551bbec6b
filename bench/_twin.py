"""A PyTorch twin of any numbacnn model, built by walking its graph, numbacnn's weights copied in.

``torch_twin(model)`` returns a ``torch.nn.Module`` that runs the same layers in the same
order on the same parameters and batch-norm statistics, so every zoo model (and any graph of
the layers below) gets an exact PyTorch peer without a hand-written builder that could drift
from the zoo. Submodules are held in a ``ModuleDict`` under the node's name with ``.`` spelt
``__`` (a module name may not contain a dot). ``without_dropout(model)`` is the same model
with every dropout's p set to 0: training-mode peers agree only when no random mask differs.

PyTorch is imported inside the functions: callers skip when it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import numbacnn as nc

_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "relu6": "relu6"}
_PARAMETRISED = ("conv2d", "linear", "batch_norm2d", "dropout")
SUPPORTED = sorted({*_ACTIVATIONS, *_PARAMETRISED, "leaky_relu", "max_pool2d", "avg_pool2d",
                    "global_avg_pool2d", "global_max_pool2d", "flatten", "concat", "add"})


def _key(name: str) -> str:
    return name.replace(".", "__")


def _module(torch: Any, layer: str, config: dict[str, Any], in_shape: tuple[int, ...]) -> Any:
    nn = torch.nn
    if layer == "conv2d":
        c = dict(config)
        return nn.Conv2d(in_shape[0], c.pop("out_channels"), c.pop("kernel_size"), **c)
    if layer == "linear":
        return nn.Linear(in_shape[-1], config["out_features"], bias=config["bias"])
    if layer == "batch_norm2d":
        return nn.BatchNorm2d(in_shape[0], **config)
    return nn.Dropout(config["p"])


def _apply(torch: Any, layer: str, config: dict[str, Any], xs: list[Any]) -> Any:
    F = torch.nn.functional
    if layer in _ACTIVATIONS:
        return getattr(F, _ACTIVATIONS[layer])(xs[0])
    if layer == "leaky_relu":
        return F.leaky_relu(xs[0], config["negative_slope"])
    if layer == "max_pool2d":
        return F.max_pool2d(xs[0], **config)
    if layer == "avg_pool2d":
        return F.avg_pool2d(xs[0], **config)
    if layer == "global_avg_pool2d":
        return xs[0].mean((2, 3))
    if layer == "global_max_pool2d":
        return xs[0].amax((2, 3))
    if layer == "flatten":
        return xs[0].flatten(config["start_dim"])
    if layer == "concat":
        return torch.cat(xs, config["dim"])
    out = xs[0]
    for x in xs[1:]:  # add
        out = out + x
    return out


# A ReLU may overwrite its input, as torchvision writes nn.ReLU(inplace=True), when it is that
# value's only reader and the producer keeps no copy of its output for backward (these keep
# their input, or nothing). PyTorch's eager peer then runs as fast as users write it.
_INPLACE_AFTER = ("conv2d", "batch_norm2d", "linear", "add", "concat")


def _inplace_relus(graph: Any, order: list[str]) -> set[str]:
    readers: dict[str, int] = {}
    for name in order:
        for i in graph.nodes[name].inputs:
            readers[i] = readers.get(i, 0) + 1
    return {name for name in order if graph.nodes[name].layer == "relu"
            and graph.nodes[graph.nodes[name].inputs[0]].layer in _INPLACE_AFTER
            and readers[graph.nodes[name].inputs[0]] == 1 and graph.nodes[name].inputs[0] not in graph.outputs}


def torch_twin(model: nc.Model) -> Any:
    """A ``torch.nn.Module`` computing what ``model`` computes, with its weights (float32, CPU)."""
    import torch

    graph = model.graph
    unknown = sorted({f"{n.layer} (node '{n.name}')" for n in graph.nodes.values()
                      if n.layer != "input" and n.layer not in SUPPORTED})
    if unknown:
        raise NotImplementedError(f"torch_twin: no PyTorch form for {', '.join(unknown)}; "
                                  f"supported: {', '.join(SUPPORTED)}. Add it to bench/_twin.py")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise NotImplementedError(f"torch_twin: one input and one output only, found "
                                  f"{len(graph.inputs)} and {len(graph.outputs)}")
    steps = [(name, graph.nodes[name].layer, dict(graph.nodes[name].config), graph.nodes[name].inputs)
             for name in model.order]
    inplace = _inplace_relus(graph, model.order)

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleDict({
                _key(name): _module(torch, layer, config, model.shapes[inputs[0]])
                for name, layer, config, inputs in steps if layer in _PARAMETRISED})

        def forward(self, x: Any) -> Any:
            values = {graph.inputs[0]: x}
            for name, layer, config, inputs in steps:
                xs = [values[i] for i in inputs]
                if name in inplace:
                    values[name] = torch.relu_(xs[0])
                elif layer in _PARAMETRISED:
                    values[name] = self.layers[_key(name)](xs[0])
                else:
                    values[name] = _apply(torch, layer, config, xs)
            return values[graph.outputs[0]]

    twin = Twin()
    state = {}
    for table in (model.params, model.buffers):
        for key, value in table.items():
            node, _, what = key.rpartition(".")
            state[f"layers.{_key(node)}.{what}"] = torch.from_numpy(np.array(value, dtype=np.float32))
    missing = set(state) - set(twin.state_dict())
    if missing:
        raise AssertionError(f"torch_twin: numbacnn tensors with no PyTorch place: {sorted(missing)}")
    twin.load_state_dict(state, strict=False)
    return twin


def without_dropout(model: nc.Model) -> nc.Model:
    """A copy of ``model`` (weights and statistics included) whose dropouts have p = 0."""
    spec = model.to_spec()
    for node in spec["graph"]["nodes"]:
        if node.get("layer") == "dropout":
            node["config"] = dict(node["config"], p=0.0)
    copy = nc.Model.from_spec(spec)
    copy.load_state(model.state())
    return copy
