"""Runs a graph on one device: forward in topological order, backward in reverse with fan-out.

The executor alone moves data between host and device: the input batch in, the outputs (and the input gradient)
out. Where a value feeds several nodes its gradients are summed into a buffer the executor owns.

Plans: everything that does not depend on the data is decided once per input signature (the inputs' shapes and
dtypes, training or not, gradients or not) and kept in a ``Plan``: the concrete shapes (inputs may have free sizes),
the buffers each node's context hands out, the layers' own plans (chunk counts follow Numba's thread count when the
plan is made), in-place decisions. The first call of a signature makes those decisions (in inference, the arena
shares buffers between nodes once their last reader has run; on the CPU a training step's first forward and
backward share theirs by liveness, ``_step_arena``); later calls replay them, with no bookkeeping but a loop over
the nodes. Plans are kept for the ``POOL_SHAPES`` most recently used signatures. A large inference batch runs in
parts, each on its own signature's plan (``_passes.micro_batches``).

Threads: inference (``grad=False``) runs on per-thread contexts, arenas and plans, so any number of threads may call
it at once. A training step (a forward with ``grad=True`` and its backward) runs on the one set of training contexts
and belongs to the thread that ran its forward; another thread's training call before that backward is refused
rather than let it mix the two steps' saved values.
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Sequence

import numpy as np

from . import _fold, _fuse_train, _shapes, _siblings
from ._arena import Arena
from ._graph_replay import follows_graph, graph_modes, replayed
from ._passes import Pass, Plan, check_inputs, in_parts, independent, micro_batches, one_thread, replay_calls
from ._step_arena import StepArena, accumulate
from ._threads import on_one_thread
from .graph import Graph, GraphError
from .layer import POOL_SHAPES, Ctx, Shape, device_method

__all__ = ["Executor", "Plan"]


class Executor:
    """Owns the per-node contexts of one model on one device."""

    def __init__(self, graph: Graph, shapes: dict[str, tuple[int | None, ...]], order: list[str],
                 dtype: np.dtype, seed: int) -> None:
        self.graph = graph
        self.shapes = shapes  # declared: None where a dim follows a free input size
        self.order = order  # the nodes the outputs depend on, topologically sorted, no inputs
        self.dtype = np.dtype(dtype)
        self.outputs = list(graph.outputs)
        self._free = any(_shapes.is_free(shapes[n]) for n in graph.inputs)
        # Values live in slots: the inputs first, then one per node in ``order``.
        slot = {n: i for i, n in enumerate([*graph.inputs, *order])}
        self._steps = [(graph.nodes[n].obj, tuple(slot[i] for i in graph.nodes[n].inputs), graph.nodes[n].layer, n)
                       for n in order]
        self._outs = [slot[o] for o in self.outputs]
        self._first = len(graph.inputs)
        self._readers = [0] * len(slot)
        for _, ins, _, _ in self._steps:
            for i in ins:
                self._readers[i] += 1
        self._keep = set(self._outs) | set(range(self._first))  # never given back to the arena
        seeds = np.random.SeedSequence(seed).spawn(len(order))
        self._seeds = dict(zip(order, seeds))
        self.ctxs: dict[str, Ctx] = {}  # the training contexts; inference has its own per thread
        self._train: list[Ctx] = []
        self.backend: Any = None
        self.device = ""
        self._plans: dict[Hashable, Plan] = {}  # training plans, per signature
        self._forwards: list[Any] = []  # per step, the layer's forward for this device
        self._backwards: list[Any] = []
        self._inference: list[Any] = []  # per step, the forward of inference without gradients
        self._modes: dict[bool, tuple] = {}  # training's or else inference's forwards, steps, readers
        self._folds: list[tuple[int, int]] = []  # (conv, batch norm) steps folded there (_fold)
        self._pooled: list[tuple[int, int]] = []  # (concat, pool) steps whose concat pools there
        self._handed: dict[int, tuple[int, int]] = {}  # there, a sibling conv's (first member, index)
        self._needs: dict[bool, list[tuple[bool, ...]]] = {}
        self._local = threading.local()
        self._lock = threading.Lock()  # held by a training forward or backward
        self._owner: threading.Thread | None = None  # the thread whose forward backward would use
        self._pending = False  # that forward's backward has not run yet
        self._step: Plan | None = None  # the plan of that forward
        self._record: StepArena | None = None  # where a training step's buffers come from (CPU)
        self._graphs = {True: False, False: False}  # replay CUDA graphs, in training / not (_graph_replay)
        self._parts_ok, self._own = False, []  # batches in parts (_passes.micro_batches); steps' own layers

    def bind(self, device: str, backend: Any, params: dict[str, dict[str, Any]],
             grads: dict[str, dict[str, Any]], buffers: dict[str, dict[str, Any]]) -> None:
        """(Re)attach the model's arrays, all already on ``device``; resets contexts."""
        self.device, self.backend = device, backend
        old = self.ctxs
        self.ctxs = {}
        # Which values a gradient can flow into: from a parameter upstream, or from an input.
        param_up = [False] * self._first + [False] * len(self.order)
        input_up = [True] * self._first + [False] * len(self.order)
        for k, (_, ins, _, name) in enumerate(self._steps):
            # A move between devices keeps each node's random stream where it was.
            rng = old[name].rng if name in old else np.random.default_rng(self._seeds[name])
            ctx = Ctx(name, device, self.dtype, backend, rng, layer=self.graph.nodes[name].obj)
            ctx.params, ctx.grads, ctx.buffers = params[name], grads[name], buffers[name]
            self.ctxs[name] = ctx
            param_up[self._first + k] = bool(params[name]) or any(param_up[i] for i in ins)
            input_up[self._first + k] = any(input_up[i] for i in ins)
        self._train = list(self.ctxs.values())
        self._record = StepArena(backend) if device == "cpu" else None
        self._forwards = _fuse_train.forwards(self._steps, self._readers, self._keep, self._first, device)
        self._backwards = [device_method(layer, "backward", device) for layer, _, _, _ in self._steps]
        self._folds, self._inference, infer, self._pooled, self._handed = _fold.plan_inference(
            self._forwards, self._steps, self._readers, self._keep, self._first, device, params)
        self._modes = {True: (self._forwards, self._steps, self._readers), False: (self._inference, *infer)}
        self._needs = {want: [tuple(param_up[i] or (want and input_up[i]) for i in ins) for _, ins, _, _ in self._steps]
                       for want in (True, False)}
        self._graphs = graph_modes(device, [layer for layer, _, _, _ in self._steps])
        own = [independent(layer) for layer, _, _, _ in self._steps]  # numbacnn's own layer classes
        self._parts_ok, self._own = device == "cpu" and all(own), own
        self.release()

    def new_pass(self) -> Pass:
        """Inference state of its own: contexts sharing the model's arrays and random streams."""
        ctxs = {}
        for name, t in self.ctxs.items():
            ctx = ctxs[name] = Ctx(name, self.device, self.dtype, self.backend, t.rng, layer=self.graph.nodes[name].obj)
            ctx.params, ctx.grads, ctx.buffers = t.params, t.grads, t.buffers
        state = Pass(ctxs, self.backend)
        state.folds = _fold.Folds(self._folds, self._steps, state.in_order, self._inference)
        return state

    def thread_pass(self) -> Pass:
        """The calling thread's inference state (made on its first inference)."""
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = self.new_pass()
        return state

    def measure(self, xs: Sequence[Any]) -> Pass:
        """Inference of the whole batch (never in parts) on state of its own
        (``Model.memory_plan``); returns that state."""
        state = self.new_pass()
        self._infer(state, xs, whole=True)
        return state

    def reset_rng(self) -> None:
        """Give every node its initial RNG again (repeatable dropout masks, for checks)."""
        for name, ctx in self.ctxs.items():
            # In place: every thread's inference contexts share these generators.
            ctx.rng.bit_generator.state = np.random.default_rng(self._seeds[name]).bit_generator.state

    # signatures ------------------------------------------------------------------------------
    def _plan(self, plans: dict[Hashable, Plan], xs: Sequence[Any], mode: tuple[bool, bool]) -> Plan:
        """The plan of this call's signature, made (inputs checked, shapes inferred) if new."""
        try:
            key: Hashable = ((mode, (xs[0].shape, xs[0].dtype)) if len(xs) == 1
                             else (mode, *[(x.shape, x.dtype) for x in xs]))
        except AttributeError:
            key = None  # not arrays: the check below says so
        plan = plans.pop(key, None)
        if plan is None:
            batch, shapes = check_inputs(self.graph, self.shapes, self.dtype, self._free, xs)
            plan = Plan(batch, shapes, self.order)
            plan.one_thread = self.device == "cpu" and batch == 1 and one_thread(self.graph, shapes, mode[1])
            if mode == (False, False):
                for c, p in self._pooled:  # there the concat yields its pool's output
                    plan.wants[c] = plan.wants[p]
                if self._parts_ok:
                    plan.parts = micro_batches(self.graph, batch, shapes, self.dtype.itemsize)
            if len(plans) >= POOL_SHAPES:
                del plans[next(iter(plans))]  # the least recently used
        plans[key] = plan
        return plan

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

    # forward ---------------------------------------------------------------------------------
    def forward(self, xs: Sequence[Any], training: bool, grad: bool) -> list[Any]:
        """Run every node; ``grad`` keeps what backward needs (else buffers are shared)."""
        if not grad and not training:
            return self._infer(self.thread_pass(), xs)
        with self._lock:  # training updates shared state (batch-norm statistics) even without grad
            if not grad:
                state = self.thread_pass()
                return self._run(self._plan(state.plans, xs, (True, False)), xs, state.in_order, True, False, state)
            self._claim("forward")
            plan = self._plan(self._plans, xs, (training, True))
            self._owner, self._pending = None, False  # nothing to differentiate if this fails
            ys = self._run(plan, xs, self._train, training, True, None)
            self._owner, self._pending, self._step = threading.current_thread(), True, plan
            return ys

    def _infer(self, state: Pass, xs: Sequence[Any], whole: bool = False) -> list[Any]:
        """Inference without gradients: batch norms folded into their convs (``_fold``); a
        large batch in parts (``micro_batches``) unless ``whole``, gathered in outputs of the
        whole batch."""
        plan = self._plan(state.plans, xs, (False, False))  # inputs checked before any fold
        state.folds.refresh()
        if plan.parts is None or whole:
            return self._run(plan, xs, state.folds.ctxs, False, False, state)
        return in_parts(plan, xs, self.backend, self.dtype, self.outputs, lambda part: self._run(
            self._plan(state.plans, part, (False, False)), part, state.folds.ctxs, False, False, state))

    def _run(self, plan: Plan, xs: Sequence[Any], ctxs: list[Ctx], training: bool, grad: bool,
             state: Pass | None) -> list[Any]:
        """One forward: replays ``plan``, or (its first inference) decides in ``state``'s arena."""
        return on_one_thread(plan.one_thread, self._run_plan, plan, xs, ctxs, training, grad, state)

    def _run_plan(self, plan: Plan, xs: Sequence[Any], ctxs: list[Ctx], training: bool, grad: bool,
                  state: Pass | None) -> list[Any]:
        to_device, dtype = self.backend.to_device, self.dtype
        if plan.ready or (state is None and self._record is None):
            if self._graphs[training]:
                return replayed(plan.replay("forward"), "forward", self.backend, xs, ctxs,
                                lambda values: self._replay(plan, values, ctxs, training, grad))
            return self._replay(plan, [to_device(x) for x in xs], ctxs, training, grad)
        values = [to_device(x) for x in xs]  # then one per node, in step order
        record = self._record if state is None else None  # a training step's first forward
        if record is not None:
            record.begin_forward(plan, self._readers)
        forwards, in_order, readers = self._modes[training or grad]
        arena = None
        if state is not None and not plan.ready:  # the first inference: decide, and record
            arena, left = state.arena, list(readers)
            arena.reset()
            state.trace = []
            for pool in plan.pools:
                pool.clear()  # what a failed first pass took: the arena no longer knows it
        handed = self._handed if forwards is self._inference else {}
        steps = zip(in_order, ctxs, plan.pools, plan.plans, plan.wants)
        for k, ((layer, ins, kind, name), ctx, pool, plans, want) in enumerate(steps):
            args = [values[i] for i in ins]
            if k in handed:  # a sibling conv: its first member made its output (_siblings)
                first, i = handed[k]
                y = plan.plans[first][_siblings.HANDED][i]
            else:
                if arena is not None:
                    plan.inplace[k] = (layer.inplace_ok and len(ins) == 1 and left[ins[0]] == 1
                                       and ins[0] not in self._keep and arena.sole(args[0]))
                ctx.begin(training, grad, pool, plans, plan.inplace[k], arena or (record and record.arena))
                y = forwards[k](ctx, *args)
            if y.shape != want or y.dtype != dtype:
                raise self._bad_output(k, y, want)
            values.append(y)
            if record is not None:
                record.after_forward(k, ctx, y, ins, values, self._keep)
            if arena is not None:
                if k not in handed:  # the first member's settle kept what it handed on
                    self._settle(arena, ctx, y, args, plans.get(_siblings.HANDED, ()))
                state.trace.append((name, y.size * y.dtype.itemsize, arena.live_bytes))
                for i in ins:
                    left[i] -= 1
                    if left[i] == 0 and i not in self._keep:
                        arena.release(values[i])
        if arena is not None:
            plan.ready, plan.bases = True, arena.used
            arena.trim(set().union(*(p.bases for p in state.plans.values())))
        if record is not None:
            record.end_forward(plan)
        return [values[o] for o in self._outs]

    def _replay(self, plan: Plan, values: list[Any], ctxs: list[Ctx], training: bool, grad: bool) -> list[Any]:
        """A forward with every decision made: one call per node, no bookkeeping."""
        if plan.calls is None:
            forwards, steps, _ = self._modes[training or grad]
            plan.calls, plan.outs = replay_calls(plan, forwards, steps, ctxs, self._first, self._outs,
                                                 {} if training or grad else self._handed)
            plan.fast = [None] * len(plan.calls)
        dtype, fast = self.dtype, None if training or grad else plan.fast
        for j, (forward, ins, ctx, pool, plans, inplace, want, k) in enumerate(plan.calls):
            # Inference: a node whose last call was one kernel call (ctx._call), on these very
            # input arrays, makes that call again without its layer's Python.
            f = fast[j] if fast else None
            if f is not None and (values[ins] is f[2] if type(ins) is int else
                                  all(values[i] is a for i, a in zip(ins, f[2]))):
                f[0](*f[1])
                values.append(f[3])
                continue
            ctx.begin(training, grad, pool, plans, inplace)
            y = forward(ctx, values[ins]) if type(ins) is int else forward(ctx, *[values[i] for i in ins])
            if y.shape != want or y.dtype != dtype:
                raise self._bad_output(k, y, want)
            values.append(y)
            if fast is not None and self._own[k]:  # not a plugin's subclass, which may do more than the call
                fast[j] = ctx._call and (*ctx._call, values[ins] if type(ins) is int else [values[i] for i in ins], y)
        return [values[o] for o in plan.outs]

    def _bad_output(self, k: int, y: Any, want: Shape) -> GraphError:
        _, _, kind, name = self._steps[k]
        return GraphError(f"{kind} node '{name}': forward returned {y.dtype} {tuple(y.shape)}, "
                          f"expected {self.dtype.name} {want} (a bug in the layer)")

    @staticmethod
    def _settle(arena: Arena, ctx: Ctx, y: Any, ins: list[Any], handed: tuple = ()) -> None:
        """After a node first ran in the arena: free its scratch but what it ``handed`` on to
        later steps (each then a value of its own); an output that the layer did not allocate
        is an alias of its input(s) and holds their buffers."""
        taken = ctx._taken
        ctx._taken = []
        ctx.saved = ()
        for buf in taken:
            if buf is not y and not any(buf is h for h in handed):
                arena.release(buf)
        if not any(buf is y for buf in taken):
            for x in ins:
                if arena.owns(x):
                    arena.retain(y, x)

    # backward --------------------------------------------------------------------------------
    def backward(self, gys: Sequence[Any], input_grad: bool = True) -> list[Any]:
        with self._lock:
            plan = self._step
            if self._owner is None:
                raise RuntimeError("backward() needs a forward(..., training=True) (or grad=True) first")
            self._claim("backward")
            if plan is None:
                raise RuntimeError("backward() a second time: the step's saved values went into its first "
                                   "backward's gradients; run forward(..., training=True) again first")
            if len(gys) != len(self.outputs):
                raise GraphError(f"backward() takes {len(self.outputs)} output gradient(s), found {len(gys)}")
            for name, gy in zip(self.outputs, gys):
                want = (plan.batch, *plan.shapes[name])
                if tuple(gy.shape) != want or gy.dtype != self.dtype:
                    raise GraphError(f"backward(): gradient for output '{name}' must be {self.dtype.name} {want}, "
                                     f"found {gy.dtype} {tuple(gy.shape)}")
            self._pending = False
            # The step's saved values die in its backward (their buffers go on to hold gradients):
            # another backward needs another forward.
            self._step = None
            record = None if plan.ready else self._record
            if record is None or record.plan is plan:
                return on_one_thread(plan.one_thread, self._backward, plan, gys, input_grad, record)
            raise RuntimeError("backward(): the forward it would differentiate was not recorded (a bug)")

    def _backward(self, plan: Plan, gys: Sequence[Any], input_grad: bool, record: StepArena | None) -> list[Any]:
        if self._graphs[True] and record is None and follows_graph(plan):
            gs = replayed(plan.replay(("backward", input_grad)), "backward", self.backend, gys, self._train,
                          lambda values: self._backward_run(plan, values, input_grad, None))
        else:
            gs = self._backward_run(plan, gys, input_grad, record)
        if not input_grad:
            return [None for _ in self.graph.inputs]
        return [self.backend.to_host(g) if g is not None else np.zeros((plan.batch, *plan.shapes[name]), self.dtype)
                for g, name in zip(gs, self.graph.inputs)]

    def _backward_run(self, plan: Plan, gys: Sequence[Any], input_grad: bool, record: StepArena | None) -> list[Any]:
        """Reverse order; returns the inputs' gradients on the device (None: not reached). ``record``ing
        (a signature's first step) ends with the plan ready: if it fails, the next forward records again."""
        grads: list[Any] = [None] * len(self._readers)
        owned = [False] * len(self._readers)
        for o, gy in zip(self._outs, gys):
            accumulate(self.backend, plan, grads, owned, o, self.backend.to_device(gy), record)
        needs = self._needs[input_grad]
        for k in range(len(self._steps) - 1, -1, -1):
            gy = grads[self._first + k]
            if gy is None:
                continue  # nothing downstream of this node reaches an output
            grads[self._first + k] = None
            _, ins, kind, name = self._steps[k]
            ctx = self._train[k]
            ctx.begin_backward(needs[k])
            if record is not None:
                record.before_backward(ctx)
            gxs = self._backwards[k](ctx, gy)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(ins):
                raise GraphError(f"{kind} node '{name}': backward returned {len(gxs)} gradient(s) for "
                                 f"{len(ins)} input(s) (a bug in the layer)")
            if record is not None:
                record.after_backward(k, ctx, gy, gxs, needs[k])
            for j, (i, gx, need) in enumerate(zip(ins, gxs, needs[k])):
                if need:
                    if gx is None:
                        raise GraphError(f"{kind} node '{name}': backward returned None for input {j} "
                                         f"('{self.graph.nodes[name].inputs[j]}'), whose gradient was asked "
                                         f"for (a bug in the layer)")
                    accumulate(self.backend, plan, grads, owned, i, gx, record)
        if record is not None:
            record.end(plan, list(self._plans.values()))
        return grads[:self._first] if input_grad else []

    def release(self) -> None:
        """Drop every buffer, plan and saved value (the model is moving or being freed)."""
        for ctx in self.ctxs.values():
            ctx.release()
        self._plans = {}
        self._local = threading.local()
        self._owner, self._pending, self._step = None, False, None
