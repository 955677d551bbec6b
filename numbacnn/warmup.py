"""Warm-up: compile every kernel ahead of time into Numba's on-disk cache.

Numba compiles a kernel the first time it is called with a new combination of argument types (dtype,
number of dimensions, memory layout) and, with caching on, keeps the machine code on disk for every later
process. Sizes never matter, so ``warmup`` runs each code path once on tiny inputs: every registered layer
(built-ins and plugins) forward and backward on the examples it declares, in training and in evaluation,
with and without the input gradient, and in inference with shared buffers and in place; both losses;
every optimizer's update; and a training step and inferences (batches 1, 2 and 32) of each zoo model, the
executor's own paths included. A later process loads its kernels from the cache instead of compiling them.
``compiled_kernels()`` lists what this process had to compile.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = ["warmup", "WarmupReport", "WarmupItem", "WarmupError", "compiled_kernels", "cache_dirs"]

DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam", "adamw")

# Zoo models at the input shapes ``numbacnn train`` feeds them (the bundled digits, MNIST, CIFAR-10): a
# layer may pick its kernels by size. Batches are tiny but for an inference at INFERENCE_BATCH: paths taken
# from a batch size on (Winograd F(4x4, 5x5) from 4 and on few channels from 32, sibling 1x1 convs from 16).
DIGITS, MNIST, CIFAR = (1, 8, 8), (1, 28, 28), (3, 32, 32)
MODEL_INPUTS: dict[str, tuple[tuple[int, ...], ...]] = {
    "lenet5": (DIGITS, MNIST), "network3": (MNIST,), "vgg_small": (CIFAR,), "googlenet_mini": (CIFAR,),
    "resnet_bottleneck": (CIFAR,), "resnet_basic": (CIFAR,), "alexnet_small": ((1, 32, 32),),
    "text_cnn": ((28, 28),), "c3d_small": ((1, 8, 22, 22),), "encoder_decoder": (MNIST,),
}
INFERENCE_BATCH = 32
#: Models whose variants run different layers: each variant is warmed.
MODEL_VARIANTS = {"encoder_decoder": ("transposed", "resize")}


class WarmupError(RuntimeError):
    """Warm-up cannot do its job here (caching is off, or the device cannot compile)."""


@dataclass
class WarmupItem:
    """One unit of warm-up work: a layer, a loss, an optimizer or a zoo model on one dtype and
    device. ``kernels`` were compiled now (and saved); ``cached`` were loaded from the disk."""

    name: str
    dtype: str
    device: str
    seconds: float = 0.0
    kernels: list[str] = field(default_factory=list)
    cached: int = 0
    skipped: str | None = None  # why nothing ran (a broken plugin, no kernels for the device)
    notes: list[str] = field(default_factory=list)  # examples that failed; the rest ran

    @property
    def compiled(self) -> int:
        return len(self.kernels)

    def line(self) -> str:
        head = f"{self.name:<24} {self.dtype:<7} {self.device:<4}"
        if self.skipped:
            return f"{head} skipped: {self.skipped}"
        text = f"{head} {self.compiled:>3} compiled {self.cached:>3} cached {self.seconds:6.1f} s"
        return "; ".join([text, *self.notes])


@dataclass
class WarmupReport:
    """What ``warmup`` did: one item per layer, loss, optimizer and model, and the cache."""

    items: list[WarmupItem]
    seconds: float
    cache_dirs: list[str]

    @property
    def compiled(self) -> int:
        return sum(item.compiled for item in self.items)

    @property
    def cached(self) -> int:
        return sum(item.cached for item in self.items)

    @property
    def problems(self) -> list[WarmupItem]:
        """Items skipped or partly failed (broken plugins, examples that raised)."""
        return [item for item in self.items if item.skipped or item.notes]

    def summary(self) -> str:
        problems = f" ({len(self.problems)} with problems, noted above)" if self.problems else ""
        return (f"warm-up done in {self.seconds:.1f} s: {self.compiled} kernel specialisations compiled, "
                f"{self.cached} already cached, {len(self.items)} items{problems}")

    def __str__(self) -> str:
        return "\n".join([*(item.line() for item in self.items), self.summary()])


# Kernels and their compile counts --------------------------------------------------------------
def _kernel_modules() -> Iterator[Any]:
    """numbacnn's modules and those of every registered layer's package, as loaded so far."""
    from .registry import _discover

    roots = {"numbacnn"} | {e.target.partition(":")[0].split(".")[0] for e in _discover().values()}
    for name, module in list(sys.modules.items()):
        if module is not None and name.split(".")[0] in roots:
            yield module


def _dispatchers() -> list[Any]:
    """Every Numba dispatcher (CPU or CUDA kernel) defined in those modules, but ``cpu_call``'s helpers."""
    from ._jit import LINKED_HELPER

    found = {id(obj): obj for module in _kernel_modules() for obj in list(vars(module).values())
             if not isinstance(obj, type) and hasattr(obj, "py_func") and hasattr(obj, "stats")
             and not getattr(obj.py_func, LINKED_HELPER, False)}
    return list(found.values())


def _cache_hits() -> int:
    """How many kernel specialisations this process has loaded from the disk cache so far."""
    return sum(sum(d.stats.cache_hits.values()) for d in _dispatchers())


def compiled_kernels() -> list[str]:
    """The kernel specialisations this process compiled rather than loaded from Numba's cache,
    as ``module.function(argument types)``: empty after a complete warm-up."""
    out = []
    for d in _dispatchers():
        for sig in d.stats.cache_misses:
            args = ", ".join(str(t) for t in sig)
            out.append(f"{d.py_func.__module__}.{d.py_func.__qualname__}({args})")
    return sorted(out)


def cache_dirs() -> list[str]:
    """Where the cached kernels loaded so far live: ``NUMBA_CACHE_DIR`` when it is set, else
    the ``__pycache__`` folders beside the kernel modules (or Numba's per-user cache when those
    are read-only)."""
    from numba.core import config

    if config.CACHE_DIR:
        return [str(config.CACHE_DIR)]
    return sorted({d.stats.cache_path for d in _dispatchers() if d.stats.cache_path})


# What each item runs ------------------------------------------------------------------------
def _inputs(shapes: Sequence[tuple[int, ...]], example: dict[str, Any], dtype: str) -> list[np.ndarray]:
    if example.get("inputs") is not None:
        return [np.ascontiguousarray(x, dtype) for x in example["inputs"]]
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _layer_model(layer: Any, shapes: list[tuple[int, ...]], example: dict[str, Any], dtype: str,
                 device: str, copy_first: bool = False) -> Any:
    from ._layer_checks import build_model

    model = build_model(layer, shapes, dtype, seed=0, copy_first=copy_first)
    for key, value in (example.get("params") or {}).items():
        model.params[f"layer.{key}"][...] = value
    return model.to(device)


def _run_example(cls: type, example: dict[str, Any], dtype: str, device: str) -> None:
    """Forward and backward of one example down every path the executor can take."""
    layer = cls(**example.get("config", {}))
    shapes = [tuple(int(s) for s in shape) for shape in example["input_shapes"]]
    xs = _inputs(shapes, example, dtype)
    model = _layer_model(layer, shapes, example, dtype, device)
    gy = np.random.default_rng(1).standard_normal((shapes[0][0], *model.shapes["layer"])).astype(dtype)
    for training in (True, False):
        for input_grad in (True, False):
            model.zero_grad()
            model.forward(*xs, training=training, grad=True)
            model.backward(gy, input_grad=input_grad)
        model.forward(*xs, training=training, grad=False)  # shared inference buffers
    if cls.inplace_ok and len(xs) == 1:
        # Behind a copy the layer's input lives in the inference arena: the in-place path.
        behind = _layer_model(layer, shapes, example, dtype, device, copy_first=True)
        for training in (True, False):
            behind.forward(*xs, training=training, grad=False)


def _warm_layer(name: str, dtype: str, device: str, item: WarmupItem) -> None:
    from .registry import get_layer, layer_devices, layer_info
    from .testing import _examples

    error = layer_info(name)["error"]
    if error is not None:
        item.skipped = error
        return
    cls = get_layer(name)
    if device not in layer_devices(cls):
        item.skipped = f"the layer has no {device} kernels"
        return
    try:
        examples, declared = _examples(cls)
    except (TypeError, ValueError) as e:
        item.skipped = str(e)
        return
    for example in examples:
        try:
            _run_example(cls, example, dtype, device)
        except Exception as e:  # a plugin's example that breaks must not stop the warm-up
            what = f"example {example.get('config', {})} on {example['input_shapes']}" if declared else \
                f"no examples() declared, and the default guess on {example['input_shapes']}"
            item.notes.append(f"{what} raised {type(e).__name__}: {e}")


def _warm_loss(name: str, dtype: str, device: str, item: WarmupItem) -> None:
    from . import losses
    from .device import get_backend

    rng = np.random.default_rng(0)
    backend = get_backend(device)
    pred = backend.to_device(rng.standard_normal((3, 4)).astype(dtype))
    if name == "cross_entropy":
        labels = np.array([0, 3, 1])
        losses.cross_entropy(pred, labels)
        losses.cross_entropy_counted(pred, labels)
    else:  # a regression loss: a target of the prediction's shape, from the host and on the device
        target = rng.standard_normal((3, 4)).astype(dtype)
        losses.get(name)(pred, target)
        losses.get(name)(pred, backend.to_device(target))


def _warm_optimizer(name: str, dtype: str, device: str, item: WarmupItem) -> None:
    from . import optim
    from ._threads import PARALLEL_MIN
    from .graph import Graph
    from .model import Model

    for features in (3, PARALLEL_MIN // 2 + 1) if device == "cpu" else (3,):  # optim_cpu's 2 kernels
        g = Graph()
        g.output(g.linear(g.input((features,)), out_features=2))
        model = Model(g, dtype=dtype).to(device)
        model.forward(np.ones((2, features), dtype), training=True)
        model.backward(np.ones((2, 2), dtype), input_grad=False)
        adam = optim.Adam if name == "adam" else optim.AdamW
        variants = ([optim.SGD(model, 0.1, momentum=0.9), optim.SGD(model, 0.1, momentum=0.9, nesterov=True),
                     optim.SGD(model, 0.1)] if name == "sgd" else [adam(model)])
        for opt in variants:
            opt.step()
            opt.step()  # the first step differs (momentum buffer, bias correction)


def _warm_model(name: str, dtype: str, device: str, item: WarmupItem) -> None:
    import inspect
    from . import zoo

    # image-to-image models (no classes) train on mean squared error, as 'numbacnn train' does
    classify = "num_classes" in inspect.signature(zoo.MODELS[name]).parameters
    for shape in MODEL_INPUTS.get(name, (None,)):
        for variant in MODEL_VARIANTS.get(name, (None,)):
            kwargs = {} if shape is None else {"input_shape": shape}
            kwargs.update({} if variant is None else {"variant": variant})
            kwargs.update({"num_classes": 3} if classify else {})
            model = zoo.build(name, seed=0, **kwargs)
            _train_and_infer(model if model.dtype.name == dtype else model.astype(dtype), device, classify)


def _train_and_infer(model: Any, device: str, classify: bool = True) -> None:
    """A training step and an evaluation as ``numbacnn train`` runs them, inference to the
    host (batch 1 too), and a backward that wants the input gradient."""
    from . import optim
    from .train import Trainer

    model.to(device)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *model.input_shapes[0])).astype(model.dtype)
    y = np.array([0, 2]) if classify else rng.standard_normal((2, *model.output_shape)).astype(model.dtype)
    trainer = Trainer(model, optim.SGD(model, 0.01, momentum=0.9), loss="cross_entropy" if classify else "mse")
    trainer.fit(x, y, epochs=1, batch_size=2, validation_data=(x, y), verbose=0)
    trainer.predict(x)
    model.forward(x[:1])  # batch 1: conv2d's plans may split each sample over the threads
    model.forward(np.repeat(x, INFERENCE_BATCH // len(x), axis=0))
    out = model.forward(x, training=True)
    model.backward(np.ones_like(out))


def _plan(dtypes: Sequence[str], devices: Sequence[str], layers: Sequence[str] | None,
          models: Sequence[str] | None, losses: Sequence[str] | None,
          optimizers: Sequence[str] | None) -> list[tuple[WarmupItem, str, str]]:
    from . import losses as losses_module
    from .registry import layer_info, layer_names
    from .zoo import MODELS

    names = layer_names() if layers is None else list(layers)
    for name in names:
        layer_info(name)  # an unknown name fails here, listing the known ones
    for what, given, known in (("model", models, MODELS), ("loss", losses, losses_module.LOSSES),
                               ("optimizer", optimizers, OPTIMIZERS)):
        for name in given or ():
            if name not in known:
                raise ValueError(f"warmup: unknown {what} {name!r}; expected one of {', '.join(known)}")
    work = [("layer", names),
            ("loss", list(losses_module.LOSSES) if losses is None else list(losses)),
            ("optimizer", list(OPTIMIZERS) if optimizers is None else list(optimizers)),
            ("model", list(MODELS) if models is None else list(models))]
    plan = []
    for device in devices:
        for dtype in dtypes:
            for kind, items in work:
                for name in items:
                    plan.append((WarmupItem(f"{kind} {name}", dtype, device), kind, name))
    return plan


_WARM: dict[str, Callable[[str, str, str, WarmupItem], None]] = {
    "layer": _warm_layer, "loss": _warm_loss, "optimizer": _warm_optimizer, "model": _warm_model}


def _run_item(item: WarmupItem, kind: str, name: str) -> None:
    """Run one item here, recording its time and what it compiled and loaded."""
    known, hits = set(compiled_kernels()), _cache_hits()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*GPU under-utilization")  # tiny inputs, tiny grids: on purpose
        _WARM[kind](name, item.dtype, item.device, item)
    item.seconds = time.perf_counter() - t0
    item.kernels = [k for k in compiled_kernels() if k not in known]
    item.cached = _cache_hits() - hits


def _check_can_keep(devices: Sequence[str]) -> None:
    from ._jit import CACHE
    from .device import DEVICES, cuda_available, is_simulator

    if not CACHE:
        raise WarmupError("NUMBACNN_CACHE=0 turns Numba's disk cache off, so warm-up has nothing to keep; "
                          "unset NUMBACNN_CACHE to use it")
    for device in devices:
        if device not in DEVICES:
            raise ValueError(f"warmup: unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if "cuda" in devices:
        if is_simulator():
            raise WarmupError("warm-up for cuda: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs kernels as "
                              "Python and caches nothing; run it on a machine with an NVIDIA GPU")
        if not cuda_available():
            raise WarmupError("warm-up for cuda: no CUDA GPU here; CUDA kernels are compiled for the GPU "
                              "that runs them, so warm up on the GPU machine (or leave out --device cuda)")


def warmup(dtypes: Sequence[str] = ("float32",), devices: Sequence[str] = ("cpu",),
           layers: Sequence[str] | None = None, models: Sequence[str] | None = None,
           losses: Sequence[str] | None = None, optimizers: Sequence[str] | None = None,
           progress: Callable[[WarmupItem, int, int], Any] | None = None, jobs: int = 1) -> WarmupReport:
    """Compile every kernel numbacnn can call, for each dtype and device, into the disk cache.

    ``layers``, ``models`` (zoo names), ``losses`` and ``optimizers`` (``"sgd"``, ``"adam"``,
    ``"adamw"``) restrict the work to the names given; ``None`` means all of them (every
    registered layer, plugins included) and an empty list none. ``progress(item, done,
    total)`` is called after each item. A broken plugin, or an example of a layer that
    raises, is noted in its item and the warm-up goes on. ``jobs`` > 1 compiles on that many
    worker processes at once (Numba compiles one kernel at a time per process), reporting items
    as they finish; layers registered in this process only run here, after them. Raises
    ``WarmupError`` when caching is off (``NUMBACNN_CACHE=0``) or CUDA is asked for without a GPU.
    """
    dtypes = [np.dtype(d).name for d in dtypes]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"warmup: dtype must be one of {', '.join(DTYPES)}, found {d}")
    devices = [str(d).lower() for d in devices]
    _check_can_keep(devices)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"warmup: jobs must be a whole number >= 1, found {jobs!r}")
    plan = _plan(dtypes, devices, layers, models, losses, optimizers)
    start = time.perf_counter()
    done = 0

    def report(item: WarmupItem) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(item, done, len(plan))

    here: Sequence[int] = range(len(plan))
    dirs: list[str] = []
    if jobs > 1 and len(plan) > 1:
        from ._warmup_jobs import run_parallel

        here, dirs = run_parallel(plan, jobs, report, _worker)
    for i in here:
        item, kind, name = plan[i]
        _run_item(item, kind, name)
        report(item)
    return WarmupReport([item for item, _, _ in plan], time.perf_counter() - start,
                        sorted(set(cache_dirs()) | set(dirs)))


def _worker(tasks: Sequence[tuple[str, str, str, str]]) -> tuple[list[WarmupItem], list[str]]:
    """A worker process's share of a parallel warm-up (numbacnn._warmup_jobs runs it there)."""
    items = [WarmupItem(f"{kind} {name}", dtype, device) for kind, name, dtype, device in tasks]
    for item, (kind, name, _, _) in zip(items, tasks):
        _run_item(item, kind, name)
    return items, cache_dirs()
