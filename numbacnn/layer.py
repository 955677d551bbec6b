"""The layer contract: the ``Layer`` base class a layer author subclasses, and ``Ctx``.

A layer states its hyper-parameters (constructor arguments, JSON-able), its per-sample output
shape, its parameters, and which kernels its forward and backward call. The executor owns
every buffer the layer touches and hands them over through ``Ctx``; ``ctx.kernels`` is the
layer's kernel module for the node's device (``<stem>_cpu`` or ``<stem>_cuda``).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
from types import ModuleType
from typing import Any, Callable, ClassVar, Hashable, Sequence

import numpy as np

__all__ = ["Layer", "Ctx", "ShapeError", "Shape", "kernel_stem", "has_kernels", "layer_kernels",
           "device_method"]

Shape = tuple[int, ...]

#: How many input signatures (batch and sizes, mode) the executor keeps buffers and plans for:
#: the training batch, a short last batch, and room for a few more, without growing with every
#: size ever seen.
POOL_SHAPES = 4


class ShapeError(ValueError):
    """A layer was given inputs of a shape it cannot take (raised from ``output_shape``)."""


class Layer:
    """Base class of every layer, built-in or plugin.

    Subclasses define ``name``, ``output_shape``, and ``forward(ctx, *xs)`` and
    ``backward(ctx, gy)`` written once for every device: they call kernels through
    ``ctx.kernels``, the module ``<stem>_cpu`` or ``<stem>_cuda`` beside the layer's own module
    (``kernels`` below names another stem). A device that truly needs other code gets its own
    method instead: the base ``forward``/``backward`` call ``forward_<device>`` /
    ``backward_<device>``, so a class written that way (``forward_cpu``, ``backward_cpu``,
    ``forward_cuda``, ``backward_cuda``) works as it always did. ``init_params``,
    ``init_buffers`` and ``flops`` are optional. Constructor arguments are recorded as the
    layer's ``config``.

    A layer may declare ``examples()``, a classmethod returning a list of dicts (``config``,
    ``input_shapes``, and any ``check_layer`` keyword such as ``reference`` or
    ``bad_shapes``): the cases ``numbacnn layers --check NAME`` runs the conformance kit on.
    """

    name: ClassVar[str] = ""
    #: How many inputs the layer takes; ``None`` means "two or more" (concat, add).
    n_inputs: ClassVar[int | None] = 1
    #: May write its output into its single input when ``ctx.inplace`` is set (the executor
    #: sets it in inference when this node is the input's last reader).
    inplace_ok: ClassVar[bool] = False
    #: The kernel stem ``ctx.kernels`` loads ``<stem>_cpu`` / ``<stem>_cuda`` of: "" (the
    #: default) is the layer's own module (the nearest class up the MRO whose module has
    #: kernels, so a subclass elsewhere keeps its parent's); a module path names another
    #: stem, shared with other layers (``kernels = "numbacnn.layers.max_pool2d"``); None says
    #: the layer calls no kernels and runs on every device.
    kernels: ClassVar[str | None] = ""
    #: ONNX operators, as (domain, op_type) pairs, that ``numbacnn.onnx.load`` turns into this
    #: layer by calling the classmethod ``onnx_import(cls, ctx)``; ``numbacnn.onnx.export``
    #: calls the method ``onnx_export(self, ctx)``. Built-in layers have theirs in the tables
    #: of ``numbacnn.onnx``; a plugin layer defines both (see the swish plugin).
    onnx_ops: ClassVar[tuple[tuple[str, str], ...]] = ()

    _config: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> "Layer":
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"layer '{cls.name}': {e}") from None
        bound.apply_defaults()
        config = dict(bound.arguments)
        config.pop(next(iter(config)))  # self
        for key, value in list(config.items()):
            if isinstance(value, list):
                config[key] = tuple(value)
        self._config = config
        return self

    def __init__(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> "Layer":
        # __new__ would re-bind constructor arguments; a copy takes the finished state instead.
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, with defaults filled in (JSON-able)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._config.items()}

    def init_params(self, input_shapes: Sequence[Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Trainable parameters, float32, from per-sample input shapes. None by default."""
        return {}

    def init_buffers(self, input_shapes: Sequence[Shape]) -> dict[str, np.ndarray]:
        """Non-trainable state (e.g. running statistics). None by default."""
        return {}

    def flops(self, input_shapes: Sequence[Shape], output_shape: Shape) -> int:
        """Floating-point operations of one sample's forward (a multiply-add counts 2)."""
        return 0

    def forward(self, ctx: "Ctx", *xs: Any) -> Any:
        """The output from the inputs (arrays on ``ctx.device``). Unless overridden: the
        device's own method, ``forward_cpu`` or ``forward_cuda``."""
        return getattr(self, "forward_" + ctx.device)(ctx, *xs)

    def backward(self, ctx: "Ctx", gy: Any) -> Any:
        """The input gradient(s) from the output gradient; parameter gradients are added into
        ``ctx.grads``. Unless overridden: ``backward_cpu`` or ``backward_cuda``."""
        return getattr(self, "backward_" + ctx.device)(ctx, gy)

    def replayable(self, training: bool) -> bool:
        """Whether every call of one input signature launches the same kernels with the same
        arguments, so that a CUDA graph captured once may stand for later calls
        (``NUMBACNN_CUDA_GRAPHS``). Override to say False where a call draws or reads
        something on the host each time (dropout's seed in training)."""
        return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"


def device_method(layer: Layer, which: str, device: str) -> Callable[..., Any]:
    """``layer.forward`` (``which="backward"``: ``layer.backward``), or, where the class keeps
    the base class's, the ``forward_<device>`` method that one would call: the executor
    resolves it once per device instead of on every call."""
    if getattr(type(layer), which) is getattr(Layer, which):
        own = getattr(layer, f"{which}_{device}", None)
        if own is not None:
            return own
    return getattr(layer, which)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is no package (__main__, a test file)
        return False


_STEMS: dict[type, str | None] = {}


def kernel_stem(cls: type[Layer]) -> str | None:
    """The stem of ``cls``'s kernel modules (see ``Layer.kernels``); None: it calls none.
    Looks for modules without importing them (no GPU stack is loaded)."""
    if cls in _STEMS:
        return _STEMS[cls]
    stem = cls.kernels
    if stem == "":
        owners = [k.__module__ for k in cls.__mro__ if issubclass(k, Layer) and k is not Layer]
        stem = next((m for m in owners if _exists(m + "_cpu") or _exists(m + "_cuda")), cls.__module__)
    _STEMS[cls] = stem
    return stem


def has_kernels(cls: type[Layer], device: str) -> bool:
    """Whether ``cls`` has a kernel module for ``device`` (always, for ``kernels = None``)."""
    stem = kernel_stem(cls)
    return stem is None or _exists(f"{stem}_{device}")


def layer_kernels(cls: type[Layer], device: str) -> ModuleType:
    """The kernel module ``<stem>_<device>`` of ``cls``, imported on first use."""
    from .device import DeviceError, kernel_module

    stem = kernel_stem(cls)
    if stem is None:
        raise RuntimeError(f"layer '{cls.name}' ({cls.__qualname__}) declares kernels = None, yet asked "
                           f"for ctx.kernels; name its kernel stem instead (kernels = 'package.stem')")
    if not _exists(f"{stem}_{device}"):
        raise DeviceError(f"layer '{cls.name}' has no {device} kernels: module {stem}_{device} was not found")
    return kernel_module(stem, device)


class Ctx:
    """What one node's forward and backward see: its parameters, gradients, saved values.

    ``params``/``grads``/``buffers`` hold arrays on the node's device; gradients are added to
    (``+=``), never assigned. ``needs_input_grad`` says which input gradients backward must
    return (``None`` in the other places). Allocation helpers give device arrays of the
    model's dtype; ``kernels`` is the layer's kernel module for this device (``layer=`` names
    the layer).

    Replay: the executor keeps, per input signature (batch and sizes, dtype, training or not),
    the buffers each node's ``empty`` calls got and hands the same ones back, in the same order,
    the next time (in inference, and in a CPU training step, they are views a shared arena
    chose once). So a layer must
    ask for the same buffers in the same order every time it runs on the same signature, as it
    naturally does when its requests follow from shapes (a request past those of the first
    run, made only on some data, gets a buffer of its own). Shape-dependent decisions (output
    sizes, kernel paths, chunk counts, scratch shapes) go into ``ctx.plan(key, make)``:
    computed once per signature, read back by forward and backward alike.
    """

    __slots__ = (
        "name", "device", "dtype", "params", "grads", "buffers", "training", "rng", "saved",
        "needs_input_grad", "backend", "inplace", "backward_expected", "_pool", "_cursor", "_arena", "_taken",
        "_plans", "_own_pool", "_own_plans", "_layer", "_kernels", "_call",
        "_scale", "_partner",
    )

    def __init__(self, name: str, device: str, dtype: np.dtype, backend: Any, rng: np.random.Generator,
                 layer: Layer | None = None):
        self._layer = type(layer) if layer is not None else None
        self._kernels: ModuleType | None = None
        self.name = name
        self.device = device
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.rng = rng
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.training = False
        self.saved: tuple = ()
        self.needs_input_grad: tuple[bool, ...] = ()
        self.inplace = False
        #: False in inference without gradients: a layer need not keep anything for a
        #: backward that will not run.
        self.backward_expected = True
        self._own_pool: list[Any] = []  # used when the executor gives no signature's pool
        self._own_plans: dict[Hashable, Any] = {}
        self._pool = self._own_pool
        self._plans = self._own_plans
        self._cursor = 0
        self._arena: Any = None
        self._taken: list[Any] = []
        self._call: tuple | None = None  # a built-in's whole inference call as (kernel, args): Executor._replay
        self._scale: Any = None  # a folded batch norm's per-channel scale, which conv2d applies (numbacnn._fold)
        self._partner: Ctx | None = None  # inference: a joined conv's other member's context (numbacnn._joined)

    @property
    def kernels(self) -> ModuleType:
        """The layer's kernel module on this node's device, e.g. ``numbacnn.layers.relu_cuda``."""
        if self._kernels is None:
            if self._layer is None:
                raise RuntimeError(f"node '{self.name}': this Ctx was made without its layer, so it has no "
                                   f"kernels; make it with Ctx(..., layer=the_layer)")
            self._kernels = layer_kernels(self._layer, self.device)
        return self._kernels

    def save(self, *values: Any) -> None:
        """Keep values for backward (``ctx.saved``): arrays, shapes, seeds (also in tuples). Only
        what is saved, returned, or read from an input outlives the call: a CPU training step
        gives an ``empty`` buffer that is none of those to other nodes once the call returns."""
        self.saved = values

    def begin(self, training: bool, grad: bool | None = None, pool: list[Any] | None = None,
              plans: dict[Hashable, Any] | None = None, inplace: bool = False, arena: Any = None) -> None:
        """Called by the executor before forward. ``grad``: a backward is to come (by default,
        unless an arena is given); ``pool`` and ``plans`` are the buffers and layer plans of
        the current signature (the context's own when not given); ``arena``, on a signature's
        first inference, is where new buffers come from (anything with ``take(shape, dtype)``);
        ``inplace``: the layer may write its output into its input (an ``inplace_ok`` layer,
        last reader of the input)."""
        self.training = training
        self.backward_expected = arena is None if grad is None else grad
        self._pool = self._own_pool if pool is None else pool
        self._plans = self._own_plans if plans is None else plans
        self._cursor = 0
        self._arena = arena
        if arena is not None:
            self._taken = []  # nothing left from a pass that failed before the executor settled it
        self.inplace = inplace
        self._call = None

    def _repeatable(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)``, a built-in layer's whole forward call; in CPU inference it is kept for
        the executor's replay, which makes it again, without the layer's Python, while the
        node's input arrays are the same objects (``Executor._replay``)."""
        fn(*args)
        if self.device == "cpu" and not self.backward_expected:
            self._call = fn, args

    def begin_backward(self, needs_input_grad: tuple[bool, ...]) -> None:
        """Called by the executor before backward: which input gradients it must return."""
        self.needs_input_grad = needs_input_grad

    def plan(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The layer's decisions for ``key`` (e.g. the input's shape): ``make()`` the first time
        in this signature, the same object afterwards, in forward and backward alike."""
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) >= 4 * POOL_SHAPES:  # a context used outside the executor
                self._plans.clear()
            found = self._plans[key] = make()
        return found

    def empty(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """An uninitialised array on the node's device (the model's dtype by default)."""
        i = self._cursor
        pool = self._pool
        if i < len(pool):  # the steady state: the buffer this request got last time
            buf = pool[i]
            if buf.shape == shape and buf.dtype == (self.dtype if dtype is None else dtype):
                self._cursor = i + 1
                return buf
        return self._new(shape, dtype)

    def _new(self, shape: Sequence[int], dtype: Any) -> Any:
        shape = tuple(int(s) for s in shape)
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        i, pool = self._cursor, self._pool
        self._cursor = i + 1
        if i < len(pool) and pool[i].shape == shape and pool[i].dtype == dtype:
            return pool[i]  # the same buffer, asked for with a list or numpy ints
        if self._arena is not None:
            buf = self._arena.take(shape, dtype)
            self._taken.append(buf)
        else:
            buf = self.backend.empty(shape, dtype)
        if i < len(pool):
            pool[i] = buf
        else:
            pool.append(buf)
        return buf

    def scratch(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """Like ``empty``, for an array used only inside this forward or backward call: never
        saved for backward, returned or read by a later call (column matrices, transformed
        tiles, per-chunk partial sums, padded copies). It is ``empty``'s buffer: in a CPU
        training step the step's heap takes it back when the call returns, for the values and
        scratch of later calls, as the inference arena does in inference."""
        return self.empty(shape, dtype)

    def zeros(self, shape: Sequence[int], dtype: Any = None) -> Any:
        buf = self.empty(shape, dtype)
        self.backend.fill_zero(buf)
        return buf

    def empty_like(self, x: Any) -> Any:
        return self.empty(x.shape, x.dtype)

    def zeros_like(self, x: Any) -> Any:
        return self.zeros(x.shape, x.dtype)

    def release(self) -> None:
        """Drop saved values, buffers and plans (the model is moving or being freed)."""
        self.saved = ()
        self._own_pool = self._pool = []
        self._own_plans = self._plans = {}
        self._cursor = 0
        self._arena = None
        self._taken = []


def recorded(ctx: Ctx, forward: Any, *args: Any) -> tuple[Any, tuple | None]:
    """``forward(ctx, *args)`` and the one kernel call it kept for the executor's replay
    (``ctx._call``, None where it kept none), ``ctx._call`` left clear: for a fused forward
    made of other forwards (numbacnn._fold.PooledConcat, numbacnn._siblings)."""
    ctx._call = None
    try:
        return forward(ctx, *args), ctx._call
    finally:
        ctx._call = None


def one_call(calls: tuple) -> tuple | None:
    """Several forwards' kept kernel calls as one for the replay, made in order; None unless
    each forward kept one (a forward that kept none must run as Python again)."""
    return (_run_calls, (tuple(calls),)) if all(calls) else None


def _run_calls(calls: tuple) -> None:
    for fn, args in calls:
        fn(*args)
