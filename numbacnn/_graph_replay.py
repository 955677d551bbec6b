"""The executor's CUDA graphs: a signature's forward and backward replayed as one launch each.

A signature's first call runs its nodes one launch at a time (kernels compile, every context
takes its buffers); the second is captured (``_cuda_graph.capture``): its inputs are first
copied into buffers of the graph's own, since a graph replays the pointers it saw, and the
outputs it returns, the contexts' state after it (what they saved for backward, where their
buffer cursors stand) and its input buffers are kept. From then on a call copies its inputs
in, launches the graph and puts the contexts back as the capture left them, so a backward
(graphed or not) finds what its forward saved, even after another signature's call ran on
the same contexts. A backward keeps one graph per ``input_grad`` (its launches differ).

A backward replays a graph only after its forward did (``follows_graph``). Only a model whose
every layer is ``replayable`` in the mode at hand gets graphs (dropout's
training forward draws a new seed on the host at every call, which a graph would freeze).
A capture that fails (the driver refused it: something in a layer synchronised or copied to
the host) is reported once and the signature runs without a graph from then on.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from . import _cuda_graph
from .layer import Ctx

__all__ = ["Replay", "replayed", "graph_modes", "follows_graph"]

_SLOTS = tuple(Ctx.__slots__)


def graph_modes(device: str, layers: Sequence[Any]) -> dict[bool, bool]:
    """{training: whether calls in that mode replay graphs}: on CUDA where graphs are on
    (``_cuda_graph.enabled``) and every layer is ``replayable`` in the mode."""
    on = device == "cuda" and _cuda_graph.enabled()
    return {t: on and all(layer.replayable(t) for layer in layers) for t in (True, False)}


def follows_graph(plan: Any) -> bool:
    """Whether a backward of ``plan`` may use a graph: only after its forward replayed one. A
    forward run kernel by kernel (its capture refused) saved values in buffers of that call's
    own, which a backward graph captured then would read on every later step."""
    forward = plan.replays.get("forward")
    return forward is not None and forward.graph is not None


class Replay:
    """One signature's graph for one direction (forward; backward with or without input
    gradients): ``runs`` so far, then the graph, its input buffers and outputs."""

    __slots__ = ("runs", "graph", "inputs", "outputs", "states", "off")

    def __init__(self) -> None:
        self.runs = 0
        self.graph: Any = None
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.states: list[tuple[Any, ...]] = []
        self.off = False  # a capture failed: run without a graph


def replayed(replay: Replay, what: str, backend: Any, xs: Sequence[Any], ctxs: Sequence[Ctx],
             run: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``run(values)``'s outputs for inputs ``xs`` (host or device arrays), through ``replay``'s
    graph once there is one; ``run`` takes the inputs on the device and launches everything."""
    if replay.graph is not None:
        _copy_in(backend, replay.inputs, xs)
        replay.graph.launch()
        for ctx, state in zip(ctxs, replay.states):
            for slot, value in zip(_SLOTS, state):
                setattr(ctx, slot, value)
        return list(replay.outputs)
    replay.runs += 1
    if replay.off or replay.runs == 1:
        return run([backend.to_device(x) for x in xs])
    inputs = [backend.new(x.shape, x.dtype) for x in xs]
    _copy_in(backend, inputs, xs)
    try:
        outputs, graph = _cuda_graph.capture(lambda: run(list(inputs)))
    except Exception as e:  # refused by the driver, or a real error: which, the plain run says
        replay.off = True
        _cuda_graph.warn_once(what, e)
        return run([backend.to_device(x) for x in xs])
    graph.launch()
    replay.graph, replay.inputs, replay.outputs = graph, inputs, list(outputs)
    replay.states = [tuple(getattr(ctx, slot) for slot in _SLOTS) for ctx in ctxs]
    return list(outputs)


def _copy_in(backend: Any, buffers: Sequence[Any], xs: Sequence[Any]) -> None:
    """This call's inputs into the buffers a graph reads (a graph replays the pointers it saw)."""
    for buf, x in zip(buffers, xs):
        backend.put(buf, x)
