"""Runs a graph on one device: forward in topological order, backward in reverse with fan-out.

The executor is the only code that moves data between host and device: the input batch in,
the outputs (and the input gradient) out. Activations are dropped as soon as their last
reader has run; what backward needs, each layer keeps through ``ctx.save``. Where a value
feeds several nodes its gradients are summed into a buffer the executor owns.

Threads: inference (``grad=False``) runs on per-thread contexts and arenas, so any number of
threads may call it at once. A training step (a forward with ``grad=True`` and its backward)
runs on the one set of training contexts and belongs to the thread that ran its forward;
another thread's training call before that backward is refused rather than let it mix the
two steps' saved values.
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Sequence

import numpy as np

from ._arena import Arena
from .graph import Graph, GraphError
from .layer import Ctx, Layer, Shape, keep_recent

__all__ = ["Executor"]


class Pass:
    """What one inference caller owns: its node contexts, its arena, and the last pass's
    ``trace`` of (node, output bytes, live bytes)."""

    def __init__(self, ctxs: dict[str, Ctx], backend: Any) -> None:
        self.ctxs = ctxs
        self.arena = Arena(backend)
        self.trace: list[tuple[str, int, int]] = []


class Executor:
    """Owns the per-node contexts of one model on one device."""

    def __init__(self, graph: Graph, shapes: dict[str, Shape], order: list[str], dtype: np.dtype,
                 seed: int) -> None:
        self.graph = graph
        self.shapes = shapes
        self.order = order  # the nodes the outputs depend on, topologically sorted, no inputs
        self.dtype = np.dtype(dtype)
        self.outputs = list(graph.outputs)
        self.readers: dict[str, int] = {}
        for name in order:
            for ref in graph.nodes[name].inputs:
                self.readers[ref] = self.readers.get(ref, 0) + 1
        seeds = np.random.SeedSequence(seed).spawn(len(order))
        self._seeds = dict(zip(order, seeds))
        self.ctxs: dict[str, Ctx] = {}  # the training contexts; inference has its own per thread
        self.backend: Any = None
        self.device = ""
        self._accs: dict[Hashable, dict[str, Any]] = {}  # fan-out gradient sums per batch shape
        self._acc: dict[str, Any] = {}
        self._local = threading.local()
        self._lock = threading.Lock()  # held by a training forward or backward
        self._owner: threading.Thread | None = None  # the thread whose forward backward would use
        self._pending = False  # that forward's backward has not run yet
        self._batch = 0
        # Which values a gradient can flow into: from a parameter upstream, or from an input.
        self._param_upstream: dict[str, bool] = {n: False for n in graph.inputs}
        self._input_upstream: dict[str, bool] = {n: True for n in graph.inputs}

    def bind(self, device: str, backend: Any, params: dict[str, dict[str, Any]],
             grads: dict[str, dict[str, Any]], buffers: dict[str, dict[str, Any]]) -> None:
        """(Re)attach the model's arrays, all already on ``device``; resets contexts."""
        self.device, self.backend = device, backend
        old = self.ctxs
        self.ctxs = {}
        for name in self.order:
            # A move between devices keeps each node's random stream where it was.
            rng = old[name].rng if name in old else np.random.default_rng(self._seeds[name])
            ctx = Ctx(name, device, self.dtype, backend, rng, layer=self._layer(name))
            ctx.params, ctx.grads, ctx.buffers = params[name], grads[name], buffers[name]
            self.ctxs[name] = ctx
            ins = self.graph.nodes[name].inputs
            self._param_upstream[name] = bool(params[name]) or any(self._param_upstream[i] for i in ins)
            self._input_upstream[name] = any(self._input_upstream[i] for i in ins)
        self.release()

    def new_pass(self) -> Pass:
        """Inference state of its own: contexts sharing the model's arrays and random streams."""
        ctxs = {}
        for name, t in self.ctxs.items():
            ctx = ctxs[name] = Ctx(name, self.device, self.dtype, self.backend, t.rng,
                                   layer=self._layer(name))
            ctx.params, ctx.grads, ctx.buffers = t.params, t.grads, t.buffers
        return Pass(ctxs, self.backend)

    def thread_pass(self) -> Pass:
        """The calling thread's inference state (made on its first inference)."""
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = self.new_pass()
        return state

    def measure(self, xs: Sequence[Any]) -> Pass:
        """Inference on state of its own (``Model.memory_plan``); returns that state."""
        state = self.new_pass()
        self._run(xs, self._check_batch(xs), state.ctxs, False, state)
        return state

    def reset_rng(self) -> None:
        """Give every node its initial RNG again (repeatable dropout masks, for checks)."""
        for name, ctx in self.ctxs.items():
            # In place: every thread's inference contexts share these generators.
            ctx.rng.bit_generator.state = np.random.default_rng(self._seeds[name]).bit_generator.state

    def _layer(self, name: str) -> Layer:
        obj = self.graph.nodes[name].obj
        assert obj is not None
        return obj

    def _check_batch(self, xs: Sequence[Any]) -> int:
        if len(xs) != len(self.graph.inputs):
            raise GraphError(f"model takes {len(self.graph.inputs)} input(s), found {len(xs)}")
        batch = None
        for name, x in zip(self.graph.inputs, xs):
            want = self.shapes[name]
            if not hasattr(x, "shape") or not hasattr(x, "dtype"):
                raise TypeError(f"input '{name}': expected an array, found {type(x).__name__}")
            if x.dtype != self.dtype:
                fix = f"convert the data (x.astype(np.{self.dtype.name}))"
                if x.dtype in (np.float32, np.float64):  # the dtypes a model can take
                    fix += f" or the model (model.astype('{x.dtype}'))"
                raise TypeError(f"input '{name}': expected {self.dtype.name} data, found {x.dtype}; {fix}")
            if tuple(x.shape[1:]) != want or len(x.shape) != len(want) + 1:
                raise GraphError(
                    f"input '{name}': expected shape (N, {', '.join(map(str, want))}), found {tuple(x.shape)}"
                )
            if batch is not None and x.shape[0] != batch:
                raise GraphError(f"input '{name}': batch {x.shape[0]} differs from {batch}")
            batch = x.shape[0]
        if not batch:
            raise GraphError("the input batch is empty")
        return int(batch)

    def _claim(self, call: str) -> None:
        """Refuse a training call that would mix with another thread's unfinished step."""
        me, owner = threading.current_thread(), self._owner
        if owner is None or owner is me:
            return
        if call == "forward" and (not self._pending or not owner.is_alive()):
            return  # that step is over (or its thread is gone and can never finish it)
        step = ("has a training forward whose backward() has not run yet" if call == "forward"
                else "ran the forward this backward() would differentiate")
        raise RuntimeError(
            f"{call}() for training in thread '{me.name}', but thread '{owner.name}' {step}: two "
            f"threads are training this model at once, which would mix their saved activations and "
            f"gradients. Run each step's forward and backward in one thread, one step at a time "
            f"(one model per thread, or a lock around each whole step); inference "
            f"(forward with training=False) is safe from any number of threads"
        )

    def forward(self, xs: Sequence[Any], training: bool, grad: bool) -> list[Any]:
        """Run every node; ``grad`` keeps what backward needs (else buffers are shared)."""
        batch = self._check_batch(xs)
        if not grad and not training:
            state = self.thread_pass()
            return self._run(xs, batch, state.ctxs, False, state)
        with self._lock:  # training updates shared state (batch-norm statistics) even without grad
            if not grad:
                state = self.thread_pass()
                return self._run(xs, batch, state.ctxs, True, state)
            self._claim("forward")
            key = tuple(x.shape for x in xs)
            self._owner, self._pending = None, False  # nothing to differentiate if this fails
            ys = self._run(xs, batch, self.ctxs, training, None, key)
            self._owner, self._pending, self._batch = threading.current_thread(), True, batch
            self._acc = keep_recent(self._accs, key, dict)
            return ys

    def _run(self, xs: Sequence[Any], batch: int, ctxs: dict[str, Ctx], training: bool,
             state: Pass | None, key: Hashable = None) -> list[Any]:
        """One forward over ``ctxs``: in ``state``'s arena (inference), else in their pools."""
        values: dict[str, Any] = {n: self.backend.to_device(x) for n, x in zip(self.graph.inputs, xs)}
        arena = None
        if state is not None:
            arena = state.arena
            arena.reset()
            state.trace = []
        left = dict(self.readers)
        keep = set(self.outputs) | set(self.graph.inputs)
        for name in self.order:
            node = self.graph.nodes[name]
            ctx = ctxs[name]
            layer = self._layer(name)
            ins = [values[i] for i in node.inputs]
            inplace = (arena is not None and layer.inplace_ok and len(ins) == 1
                       and left[node.inputs[0]] == 1 and node.inputs[0] not in keep
                       and arena.owns(ins[0]))
            ctx.begin(training, arena, inplace, key)
            y = layer.forward(ctx, *ins)
            want = (batch, *self.shapes[name])
            if tuple(y.shape) != want or y.dtype != self.dtype:
                raise GraphError(
                    f"{node.layer} node '{name}': forward returned {y.dtype} {tuple(y.shape)}, "
                    f"expected {self.dtype.name} {want} (a bug in the layer)"
                )
            values[name] = y
            if state is not None:
                self._settle(arena, ctx, y, ins)
                state.trace.append((name, y.size * y.dtype.itemsize, arena.live_bytes))
            for ref in node.inputs:
                left[ref] -= 1
                if left[ref] == 0 and ref not in keep:
                    if arena is not None:
                        arena.release(values[ref])
                    del values[ref]
        return [values[o] for o in self.outputs]

    @staticmethod
    def _settle(arena: Arena, ctx: Ctx, y: Any, ins: list[Any]) -> None:
        """After a node ran in the arena: free its scratch; an output that the layer did not
        allocate is an alias of its input(s) and holds their buffers."""
        taken = ctx._taken
        ctx._taken = []
        ctx.saved = ()
        for buf in taken:
            if buf is not y:
                arena.release(buf)
        if not any(buf is y for buf in taken):
            owned = [x for x in ins if arena.owns(x)]
            for x in owned:
                arena.retain(y, x)

    def backward(self, gys: Sequence[Any], input_grad: bool = True) -> list[Any]:
        with self._lock:
            if self._owner is None:
                raise RuntimeError("backward() needs a forward(..., training=True) (or grad=True) first")
            self._claim("backward")
            if len(gys) != len(self.outputs):
                raise GraphError(f"backward() takes {len(self.outputs)} output gradient(s), found {len(gys)}")
            for name, gy in zip(self.outputs, gys):
                want = (self._batch, *self.shapes[name])
                if tuple(gy.shape) != want or gy.dtype != self.dtype:
                    raise GraphError(
                        f"backward(): gradient for output '{name}' must be {self.dtype.name} {want}, "
                        f"found {gy.dtype} {tuple(gy.shape)}"
                    )
            self._pending = False
            return self._backward(gys, input_grad)

    def _backward(self, gys: Sequence[Any], input_grad: bool) -> list[Any]:
        grads: dict[str, Any] = {}
        owned: set[str] = set()
        for name, gy in zip(self.outputs, gys):
            self._accumulate(grads, owned, name, self.backend.to_device(gy))
        for name in reversed(self.order):
            gy = grads.pop(name, None)
            if gy is None:
                continue  # nothing downstream of this node reaches an output
            node = self.graph.nodes[name]
            ctx = self.ctxs[name]
            ctx.needs_input_grad = tuple(
                self._param_upstream[i] or (input_grad and self._input_upstream[i]) for i in node.inputs
            )
            gxs = self._layer(name).backward(ctx, gy)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(node.inputs):
                raise GraphError(
                    f"{node.layer} node '{name}': backward returned {len(gxs)} gradient(s) for "
                    f"{len(node.inputs)} input(s) (a bug in the layer)"
                )
            for k, (ref, gx, need) in enumerate(zip(node.inputs, gxs, ctx.needs_input_grad)):
                if need:
                    if gx is None:
                        raise GraphError(
                            f"{node.layer} node '{name}': backward returned None for input {k} "
                            f"('{ref}'), whose gradient was asked for (a bug in the layer)"
                        )
                    self._accumulate(grads, owned, ref, gx)
        if not input_grad:
            return [None for _ in self.graph.inputs]
        out = []
        for name in self.graph.inputs:
            g = grads.get(name)
            out.append(self.backend.to_host(g) if g is not None else
                       np.zeros((self._batch, *self.shapes[name]), self.dtype))
        return out

    def _accumulate(self, grads: dict[str, Any], owned: set[str], name: str, g: Any) -> None:
        if name not in grads:
            grads[name] = g  # borrowed from the layer that returned it
            return
        if name in owned:
            self.backend.add(grads[name], grads[name], g)
            return
        # A borrowed gradient may alias another value's (add returns gy twice): the sum goes
        # into a buffer of our own, kept for the next step, in one pass over both.
        acc = self._acc.get(name)
        if acc is None or acc.shape != g.shape:
            acc = self._acc[name] = self.backend.empty(g.shape, g.dtype)
        self.backend.add(acc, grads[name], g)
        grads[name] = acc
        owned.add(name)

    def release(self) -> None:
        """Drop every buffer and saved value (the model is moving or being freed)."""
        for ctx in self.ctxs.values():
            ctx.release()
        self._accs, self._acc = {}, {}
        self._local = threading.local()
        self._owner, self._pending = None, False
