"""Model: a graph with shapes inferred, parameters initialised, and an executor to run it."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from . import registry
from ._checkpoint import load_model, save_model
from ._threads import kernel_launches, single_thread_blas
from .device import DeviceError, check_device, get_backend
from .executor import Executor
from ._flat import FlatTable, Layout
from . import _shapes
from .graph import Graph, GraphError
from .layer import Shape, ShapeError

__all__ = ["Model"]

MODEL_FORMAT = "numbacnn.model/1"
DTYPES = ("float32", "float64")


def _dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise TypeError(f"model dtype must be one of {', '.join(DTYPES)}, found {dt.name}")
    return dt


class Model:
    """A runnable graph: ``Model(g, seed=0)`` infers shapes and initialises parameters.

    ``params``, ``grads`` and ``buffers`` map ``"node.param"`` to the live arrays (on the
    model's device). ``forward`` takes and returns NumPy arrays; ``backward`` fills ``grads``.
    """

    def __init__(self, graph: Graph, seed: int = 0, dtype: Any = "float32", device: str = "cpu") -> None:
        if not isinstance(graph, Graph):
            raise TypeError(f"Model() expects a numbacnn.Graph, found {type(graph).__name__}")
        self.graph = graph.frozen()  # the model's own copy: later edits of ``graph`` cannot reach it
        self.seed = int(seed)
        self.dtype = _dtype(dtype)
        found = _shapes.declared(self.graph)
        # Per-sample shapes, None where a dim follows a free input size (summary shows "?").
        self.shapes: dict[str, tuple[int | None, ...]] = found.shapes
        self.order = [n for n, node in self.graph.nodes.items() if node.layer != "input"]
        # Parameters never depend on a free size, so one probe's shapes create them all.
        some = found.probes[0] if found.probes else found.shapes
        rng = np.random.default_rng(self.seed)
        initial: dict[str, np.ndarray] = {}
        self.buffers: dict[str, Any] = {}
        for name in self.order:
            node = self.graph.nodes[name]
            ins = [some[i] for i in node.inputs]
            params, buffers = node.obj.init_params(ins, rng), node.obj.init_buffers(ins)
            if found.probes and any(found.probes[1][i] != some[i] for i in node.inputs):
                _check_fixed_params(name, node, found, params, buffers)
            for key, value in params.items():
                initial[f"{name}.{key}"] = np.asarray(value)
            for key, value in buffers.items():
                self.buffers[f"{name}.{key}"] = np.ascontiguousarray(value, dtype=self.dtype)
        # One flat array each for parameters and gradients, the keys' arrays views into it:
        # the optimizer updates all parameters in one kernel call, zero_grad is one fill.
        layout = Layout((k, np.shape(v)) for k, v in initial.items())
        self.params: dict[str, Any] = FlatTable(layout, np.empty(layout.size, self.dtype), "model.params")
        for key, value in initial.items():
            self.params[key] = value
        self.grads: dict[str, Any] = FlatTable(layout, np.zeros(layout.size, self.dtype), "model.grads")
        self.device = "cpu"
        self._executor = Executor(self.graph, self.shapes, self.order, self.dtype, self.seed)
        self._bind()
        if device != "cpu":
            self.to(device)

    # structure -------------------------------------------------------------------------------
    def shapes_at(self, *input_shapes: Sequence[int]) -> dict[str, Shape]:
        """Concrete per-sample shapes of every node for inputs of these per-sample shapes, one
        per graph input (``model.shapes_at((3, 64, 48))``); what a model with free sizes
        (``g.input((3, None, None))``) computes at that size. Bad shapes name the node."""
        names = self.graph.inputs
        if len(input_shapes) != len(names):
            raise ValueError(f"shapes_at: the model takes {len(names)} input(s), found {len(input_shapes)} shape(s)")
        for name, shape in zip(names, input_shapes):
            if not _shapes.fits(tuple(shape), self.shapes[name]):
                raise ShapeError(f"input '{name}': expected a per-sample shape {_shapes.show(self.shapes[name])} "
                                 f"(? is any size), found {tuple(shape)}")
        return _shapes.infer(self.graph, dict(zip(names, input_shapes)))

    def _sized(self, at: Any, what: str) -> dict[str, Shape]:
        """Concrete shapes for ``at`` (a per-sample input shape, or a list of them), or the
        declared ones when no input has a free size."""
        if at is None:
            if any(_shapes.is_free(self.shapes[n]) for n in self.graph.inputs):
                example = _shapes.show(tuple(32 if d is None else d for d in self.shapes[self.graph.inputs[0]]))
                raise ValueError(f"{what} depends on the input size and this model takes free sizes "
                                 f"{', '.join(_shapes.show(s) for s in self.input_shapes)}: give one, "
                                 f"e.g. {what}(at={example})")
            return self.shapes  # type: ignore[return-value]
        shapes = [at] if at and not isinstance(at[0], (tuple, list)) else list(at)
        return self.shapes_at(*shapes)

    def _bind(self) -> None:
        per = {n: {} for n in self.order}
        grads = {n: {} for n in self.order}
        bufs = {n: {} for n in self.order}
        for key, value in self.params.items():
            node, _, p = key.rpartition(".")
            per[node][p] = value
            grads[node][p] = self.grads[key]
        for key, value in self.buffers.items():
            node, _, p = key.rpartition(".")
            bufs[node][p] = value
        self._executor.bind(self.device, get_backend(self.device), per, grads, bufs)

    @property
    def input_shapes(self) -> list[tuple[int | None, ...]]:
        """Per-sample input shapes as declared (None: a free size)."""
        return [self.shapes[n] for n in self.graph.inputs]

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Per-sample shape of the (first) output; None where it follows a free input size."""
        return self.shapes[self.graph.outputs[0]]

    # running ---------------------------------------------------------------------------------
    def forward(self, *xs: Any, training: bool = False, grad: bool | None = None,
                host: bool = True) -> Any:
        """Run the model on a batch (N, ...) per input; returns NumPy array(s).

        ``training`` selects the layers' mode (dropout, batch statistics); ``grad`` (default:
        ``training``) keeps what ``backward`` needs. Without it, activation buffers are shared
        between nodes as soon as their last reader has run (see ``memory_plan``).
        ``host=False`` returns the output(s) where they are, on the model's device, valid until
        the calling thread's next forward (the trainer computes the loss there; nothing
        crosses to the host).

        Inference (``training=False``) may run from any number of threads at once. A training
        step (forward with gradients, then ``backward``) belongs to the thread that ran its
        forward: another thread's training call before that backward raises ``RuntimeError``.
        """
        with single_thread_blas, kernel_launches():
            ys = self._executor.forward(xs, training, training if grad is None else grad)
        if host:
            to_host = self._executor.backend.to_host
            return to_host(ys[0]) if len(ys) == 1 else tuple(to_host(y) for y in ys)
        return ys[0] if len(ys) == 1 else tuple(ys)

    __call__ = forward

    def backward(self, *gys: Any, input_grad: bool = True) -> Any:
        """Back-propagate output gradient(s); adds into ``grads``, returns the input gradient."""
        with single_thread_blas, kernel_launches():
            gxs = self._executor.backward(gys, input_grad)
        return gxs[0] if len(gxs) == 1 else tuple(gxs)

    def zero_grad(self) -> None:
        get_backend(self.device).fill_zero(self.grads.flat)

    def rng_state(self) -> dict[str, Any]:
        """Each node's random-generator state (dropout masks), for checkpoints."""
        return {name: ctx.rng.bit_generator.state for name, ctx in self._executor.ctxs.items()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what ``rng_state()`` gave."""
        ctxs = self._executor.ctxs
        if set(state) != set(ctxs):
            raise ValueError(f"rng state is for nodes {sorted(state)}, the model has {sorted(ctxs)}")
        for name, ctx in ctxs.items():
            ctx.rng.bit_generator.state = state[name]

    # devices and dtypes ----------------------------------------------------------------------
    def to(self, device: str) -> "Model":
        """Move parameters, gradients, buffers and all later activations to ``device``."""
        device = check_device(device)
        for name in self.order:
            node = self.graph.nodes[name]
            devices = registry.layer_devices(type(node.obj))
            if device not in devices:
                info = registry.layer_info(node.layer)
                raise DeviceError(
                    f"{node.layer} node '{name}': layer '{node.layer}' from {info['distribution']} "
                    f"{info['version']} has no {device} kernels (it implements: {', '.join(devices)}); "
                    f"it cannot be placed on {device}"
                )
        if device == self.device:
            return self
        old, new = get_backend(self.device), get_backend(device)
        move = lambda a: new.to_device(old.to_host(a)) if device != "cpu" else old.to_host(a)
        for table in (self.params, self.grads):
            table.rebind(move(table.flat))
        for key, value in self.buffers.items():
            self.buffers[key] = move(value)
        self._executor.release()
        self.device = device
        self._bind()
        return self

    def astype(self, dtype: Any) -> "Model":
        """A copy of this model in another dtype (float64 for gradient checks)."""
        other = Model(self.graph, seed=self.seed, dtype=dtype)
        for table, dst in ((self.params, other.params), (self.buffers, other.buffers)):
            for key, value in table.items():
                dst[key][...] = get_backend(self.device).to_host(value).astype(other.dtype)
        return other.to(self.device)

    # description -----------------------------------------------------------------------------
    def param_count(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.params.values()))

    def _node_flops(self, shapes: dict[str, Shape]) -> dict[str, int]:
        return {name: int(self.graph.nodes[name].obj.flops([shapes[i] for i in self.graph.nodes[name].inputs],
                                                           shapes[name])) for name in self.order}

    def flops(self, at: Any = None) -> int:
        """Forward FLOPs of one sample; with free input sizes, at ``at`` (e.g. ``(3, 32, 32)``)."""
        return sum(self._node_flops(self._sized(at, "flops")).values())

    def summary(self, at: Any = None) -> str:
        """A table: node, layer, output shape, parameters, FLOPs (per sample).

        A dim that follows a free input size shows as ``?``; FLOPs that depend on it read
        "per size", or are given at ``at`` (a per-sample input shape, e.g. ``(3, 32, 32)``)."""
        free = any(_shapes.is_free(s) for s in self.input_shapes)
        if at is not None or not free:
            counts = self._node_flops(self._sized(at, "summary"))
            flops = {n: f"{f:,}" for n, f in counts.items()}
            total = f"{sum(counts.values()):,}"
        else:
            a, b = (self._node_flops(p) for p in _shapes.declared(self.graph).probes)
            flops = {n: f"{a[n]:,}" if a[n] == b[n] else "per size" for n in self.order}
            total = "per size"
        head = "FLOPs" if at is None else f"FLOPs at {_shapes.show(at)}" if not isinstance(at[0], (tuple, list)) \
            else "FLOPs at " + ", ".join(map(_shapes.show, at))
        rows = [("node", "layer", "output shape", "params", head)]
        for name in self.graph.inputs:
            rows.append((name, "input", _shapes.show(self.shapes[name]), "0", "0"))
        for name in self.order:
            node = self.graph.nodes[name]
            n = sum(int(np.prod(v.shape)) for k, v in self.params.items() if k.rpartition(".")[0] == name)
            rows.append((name, node.layer, _shapes.show(self.shapes[name]), f"{n:,}", flops[name]))
        rows.append(("total", "", "", f"{self.param_count():,}", total))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        line = "  ".join("-" * w for w in widths)
        fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        text = [fmt(rows[0]), line, *map(fmt, rows[1:-1]), line, fmt(rows[-1])]
        if free:
            text.append("? follows the input's free size" + ("" if at is not None else
                        "; FLOPs at one size: summary(at=(C, H, W))"))
        return "\n".join(text)

    def memory_plan(self, batch_size: int = 1, at: Any = None) -> dict[str, Any]:
        """Activation memory of inference at ``batch_size``, measured on a pass over zeros
        (with free input sizes, inputs of per-sample shape ``at``).

        Returns ``rows`` (node, output bytes, activation bytes alive while it ran: its inputs
        and output), ``keep_all_bytes`` (every activation kept, as a naive executor would),
        ``peak_activation_bytes`` (the most alive at once) and ``arena_bytes`` (all the arena
        allocated, layer scratch included).
        """
        shapes = self._sized(at, "memory_plan")
        xs = [np.zeros((batch_size, *shapes[n]), self.dtype) for n in self.graph.inputs]
        with single_thread_blas, kernel_launches():
            # A pass of its own: a fresh arena measures this batch size alone, and a training
            # step waiting for its backward keeps what it saved.
            state = self._executor.measure(xs)
        rows = [{"node": n, "bytes": b, "live_bytes": live} for n, b, live in state.trace]
        return {"batch_size": batch_size, "rows": rows,
                "keep_all_bytes": sum(r["bytes"] for r in rows),
                "peak_activation_bytes": max((r["live_bytes"] for r in rows), default=0),
                "arena_bytes": state.arena.allocated_bytes}

    def __repr__(self) -> str:
        return (f"<numbacnn.Model: {len(self.order)} nodes, {self.param_count():,} parameters, "
                f"{self.dtype.name}, {self.device}>")

    # persistence -----------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        """A JSON-able dict: the graph (with layer providers), dtype and seed; no weights."""
        return {"format": MODEL_FORMAT, "graph": self.graph.to_spec(), "dtype": self.dtype.name,
                "seed": self.seed}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Model":
        """Rebuild a model (fresh weights) from ``to_spec()``; a malformed spec is named."""
        if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
            raise GraphError(f"not a numbacnn model spec: expected format {MODEL_FORMAT!r}, found {found!r}")
        if "graph" not in spec:
            raise GraphError("model spec: no 'graph' entry (expected the dict Graph.to_spec() gives)")
        dtype, seed = spec.get("dtype", "float32"), spec.get("seed", 0)
        if dtype not in DTYPES:
            raise GraphError(f"model spec: 'dtype' must be one of {', '.join(DTYPES)}, found {dtype!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise GraphError(f"model spec: 'seed' must be an int, found {seed!r}")
        return cls(Graph.from_spec(spec["graph"]), seed=seed, dtype=dtype)

    def state(self) -> dict[str, np.ndarray]:
        """Host copies of parameters and buffers, keyed ``params/<key>`` and ``buffers/<key>``."""
        host = get_backend(self.device).to_host
        out = {f"params/{k}": host(v) for k, v in self.params.items()}
        out.update({f"buffers/{k}": host(v) for k, v in self.buffers.items()})
        return out

    def load_state(self, state: dict[str, np.ndarray], source: str = "state") -> None:
        """Copy arrays from ``state()`` into the live parameters and buffers (shapes checked)."""
        backend = get_backend(self.device)
        for prefix, table in (("params/", self.params), ("buffers/", self.buffers)):
            for key, live in table.items():
                if prefix + key not in state:
                    raise ValueError(f"{source}: '{key}' is missing")
                value = np.asarray(state[prefix + key])
                if value.shape != tuple(live.shape):
                    raise ValueError(f"{source}: '{key}' has shape {value.shape}, the model expects {tuple(live.shape)}")
                backend.assign(live, backend.to_device(value.astype(self.dtype)))

    def save(self, path: str | os.PathLike, extra: dict[str, np.ndarray] | None = None,
             allow_nonfinite: bool = False) -> None:
        """Write weights, buffers and the spec (with layer providers) to an ``.npz`` file.

        Atomic: the file is written beside ``path`` and renamed over it once complete, so a
        failed or interrupted save leaves an existing file as it was. Parameters or buffers
        holding NaN or inf are refused (a ``ValueError`` naming them, nothing written) unless
        ``allow_nonfinite=True``, which keeps a diverged model for debugging.
        """
        save_model(self, path, extra, allow_nonfinite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read a model written by ``save`` (refusing files that are not complete checkpoints)."""
        return load_model(cls, path)



def _check_fixed_params(name: str, node: Any, found: _shapes.FreeShapes, params: dict[str, Any],
                        buffers: dict[str, Any]) -> None:
    """Refuse a node whose parameters (or buffers) would change with a free input size."""
    other = [found.probes[1][i] for i in node.inputs]
    got = {k: np.shape(v) for k, v in {**params, **buffers}.items()}
    alt = {k: np.shape(v) for k, v in {**node.obj.init_params(other, np.random.default_rng(0)),
                                       **node.obj.init_buffers(other)}.items()}
    if got == alt:
        return
    key = next((k for k in got if got[k] != alt.get(k)), next(iter(alt)))
    ins = [found.shapes[i] for i in node.inputs]
    a, b = found.sizes
    fix = ("give the input a fixed channel count: only spatial sizes may be free" if any(len(s) > 1 and s[0] is None
           for s in ins) else "put global_avg_pool2d, adaptive pooling or spp before flatten, so that a fixed "
           "number of features reaches it")
    raise ShapeError(
        f"{node.layer} node '{name}': its parameters would depend on the free input size (its input "
        f"{', '.join(map(_shapes.show, ins))} varies with it: '{key}' would be {got.get(key)} with free sizes "
        f"{a} and {alt.get(key)} with {b}); {fix}"
    )
