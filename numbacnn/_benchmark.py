"""``benchmark_layer``: time one layer with pytest-benchmark, beside a reference if given.

The layer runs in a one-node model (built as ``check_layer`` builds it), driven through its
context the way the executor drives it, on arrays already on the device: the timed call is
the layer's forward (or forward and backward), nothing else. It runs twice before the timer
starts (the first run compiles the kernels and makes the layer's plans), and the last of
those runs is compared with the reference, so a ratio is never read off two different
computations. Every peer of one workload gets the same ``benchmark.group``, so one
parametrised test puts numbacnn's row and the reference's side by side.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Sequence

import numpy as np

from ._layer_checks import LayerCheckError, build_model
from ._threads import kernel_launches, single_thread_blas
from .device import check_device
from .layer import Layer

__all__ = ["benchmark_layer", "MODES"]

MODES = ("forward", "forward_backward")
#: Floating-point work of a backward relative to its forward: the input and the weight
#: gradients each cost about one forward (the usual count, 2x forward).
BACKWARD_FLOPS = 2


def benchmark_layer(
    benchmark: Any,
    layer: Layer,
    input_shapes: Sequence[Sequence[int]],
    *,
    mode: str = "forward",
    peer: str = "numbacnn",
    reference: Callable[..., Any] | None = None,
    reference_backward: Callable[..., Any] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    training: bool | None = None,
    inputs: Sequence[np.ndarray] | None = None,
    params: dict[str, np.ndarray] | None = None,
    rtol: float = 1e-3,
    rounds: int | None = None,
    group: str | None = None,
    flops: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``layer`` on inputs of full shapes ``input_shapes`` (batch first) with
    ``benchmark``, pytest-benchmark's fixture (or numbacnn's ``benchmark_layer`` fixture,
    which passes it for you).

    ``mode``: ``"forward"`` (inference unless ``training=True``) or ``"forward_backward"``
    (training mode unless ``training=False``; every input gradient is asked for).
    ``peer``: which row this call times: ``"numbacnn"`` (the layer), or any other name
    (``"numpy"``, ``"torch"``) for the reference. ``reference(*xs, **params)`` returns the
    forward's output; ``reference_backward(gy, *xs, **params)`` the input gradient (a tuple
    of them for several inputs), optionally followed by a dict of parameter gradients by
    short name. They get the same host arrays every call (dtype ``dtype``) and must not
    change them. Whichever row is timed, the layer's result and the reference's are compared
    first: every element within ``rtol`` times the largest magnitude of the reference's
    array, else ``LayerCheckError``.

    ``inputs`` replaces the random normal inputs, ``params`` the initial parameters (short
    names); ``rounds`` fixes the number of timed rounds (``benchmark.pedantic``) instead of
    pytest-benchmark's calibration. The group is ``group`` or "LAYER MODE DEVICE SHAPES";
    ``benchmark.extra_info`` records the layer, peer, shapes, dtype, device, the FLOPs of one
    call (``flops``, or the layer's ``flops()`` count, x3 for forward and backward) and,
    once timed, the GFLOP/s at the median. Returns that record, with ``group``.
    """
    if mode not in MODES:
        raise ValueError(f"benchmark_layer: mode must be one of {', '.join(MODES)}, found {mode!r}")
    if not isinstance(peer, str) or not peer:
        raise ValueError(f"benchmark_layer: peer must be a name ('numbacnn', 'numpy', ...), found {peer!r}")
    if peer != "numbacnn" and reference is None:
        raise ValueError(f"benchmark_layer: peer {peer!r} times the reference, but no reference= was given")
    if peer != "numbacnn" and mode == "forward_backward" and reference_backward is None:
        raise ValueError(f"benchmark_layer: peer {peer!r} in mode forward_backward times the reference's "
                         f"forward and backward; give reference_backward=")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"benchmark_layer: dtype must be 'float32' or 'float64', found {dtype!r}")
    device = check_device(device)
    label = layer_label(layer)
    shapes = _full_shapes(label, input_shapes)
    if inputs is not None and [tuple(np.shape(x)) for x in inputs] != shapes:
        raise ValueError(f"benchmark_layer({label}): inputs= have shapes {[tuple(np.shape(x)) for x in inputs]}, "
                         f"input_shapes says {shapes}")
    backward = mode == "forward_backward"
    training = backward if training is None else bool(training)

    run = _LayerRun(layer, label, shapes, dtype, device, training, seed, inputs, params)
    with single_thread_blas, kernel_launches():
        run.step(backward)  # compiles the kernels and makes the layer's plans, untimed
        run.zero_grad()
        got = run.result(run.step(backward), backward)
    checked = _check_reference(run, label, got, reference, reference_backward if backward else None, rtol) \
        if reference is not None else []

    benchmark.group = group or f"{label} {mode.replace('_', '+')} {device} {' '.join(map(_shape_id, shapes))}"
    work = flops if flops is not None else run.flops * (1 + BACKWARD_FLOPS if backward else 1)
    info = benchmark.extra_info
    info.update(layer=type(layer).name, config=layer.config, peer=peer, mode=mode, device=device, dtype=dtype,
                training=training, input_shapes=[list(s) for s in shapes], batch=shapes[0][0], flops=int(work),
                checked=checked)
    if peer == "numbacnn":
        with single_thread_blas, kernel_launches():
            _time(benchmark, lambda: run.step(backward), rounds)
    else:
        xs, ps, gy = run.xs_host, run.params_host, run.gy_host
        if backward:
            def ref_step() -> Any:
                return reference(*xs, **ps), reference_backward(gy, *xs, **ps)
        else:
            def ref_step() -> Any:
                return reference(*xs, **ps)
        _time(benchmark, ref_step, rounds)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = getattr(stats, "median", None)
    if work and median:
        info["gflops"] = work / median / 1e9
    return {"group": benchmark.group, **info}


def _time(benchmark: Any, fn: Callable[[], Any], rounds: int | None) -> None:
    if rounds is None:
        benchmark(fn)
    else:
        benchmark.pedantic(fn, rounds=int(rounds), iterations=1, warmup_rounds=0)


class _LayerRun:
    """The layer in a one-node model on ``device``, its inputs and output gradient there."""

    def __init__(self, layer: Layer, label: str, shapes: list[tuple[int, ...]], dtype: str, device: str,
                 training: bool, seed: int, inputs: Sequence[np.ndarray] | None,
                 params: dict[str, np.ndarray] | None) -> None:
        try:
            model = build_model(layer, shapes, dtype, seed)
        except Exception as e:  # shape inference names node 'layer': say whose call it was
            raise type(e)(f"benchmark_layer({label}) on input shapes {', '.join(map(str, shapes))}: {e}") from e
        known = {k.split(".", 1)[1] for k in model.params}
        for key, value in (params or {}).items():
            if key not in known:
                raise ValueError(f"benchmark_layer({label}): params= names {key!r}; the layer's parameters are "
                                 f"{', '.join(sorted(known)) or 'none'}")
            model.params[f"layer.{key}"][...] = value
        model.to(device)
        self.ctx = model._executor.ctxs["layer"]
        self.layer, self.backend = layer, self.ctx.backend
        self.model = model
        rng = np.random.default_rng(seed)
        kind = np.dtype(dtype)
        self.xs_host = [np.ascontiguousarray(x, kind) for x in inputs] if inputs is not None else \
            [rng.standard_normal(s).astype(kind) for s in shapes]
        out = model.shapes["layer"]
        self.gy_host = rng.standard_normal((shapes[0][0], *out)).astype(kind)
        to_host = self.backend.to_host
        self.params_host = {k.split(".", 1)[1]: to_host(v) for k, v in model.params.items()}
        self.xs = [self.backend.to_device(x) for x in self.xs_host]
        self.gy = self.backend.to_device(self.gy_host)
        self.ctx.needs_input_grad = (True,) * len(shapes)
        self.flops = int(layer.flops([s[1:] for s in shapes], out)) * shapes[0][0]
        self.training = training

    def step(self, backward: bool) -> tuple[Any, Any]:
        ctx, layer = self.ctx, self.layer
        ctx.begin(self.training, grad=backward)
        y = layer.forward(ctx, *self.xs)
        gxs = layer.backward(ctx, self.gy) if backward else None
        self.backend.synchronize()  # a CUDA launch returns at once: the time is the work's
        return y, gxs

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def result(self, out: tuple[Any, Any], backward: bool) -> dict[str, np.ndarray]:
        """The step's results on the host: "y", "gx" (or "gx0", "gx1", ...), "grad NAME"."""
        to_host = self.backend.to_host
        y, gxs = out
        found = {"y": to_host(y)}
        if backward:
            gxs = gxs if isinstance(gxs, tuple) else (gxs,)
            names = ["gx"] if len(gxs) == 1 else [f"gx{i}" for i in range(len(gxs))]
            found.update((n, to_host(g)) for n, g in zip(names, gxs))
            found.update((f"grad {k}", to_host(g)) for k, g in self.ctx.grads.items())
        return found


def _check_reference(run: _LayerRun, label: str, got: dict[str, np.ndarray], reference: Callable[..., Any],
                     reference_backward: Callable[..., Any] | None, rtol: float) -> list[str]:
    """Compare the layer's results with the reference's; returns what was compared."""
    xs, ps = [x.copy() for x in run.xs_host], {k: v.copy() for k, v in run.params_host.items()}
    want = {"y": reference(*xs, **ps)}
    if reference_backward is not None:
        back = reference_backward(run.gy_host.copy(), *xs, **ps)
        back = list(back) if isinstance(back, (tuple, list)) else [back]
        grads = back.pop() if back and isinstance(back[-1], dict) else {}
        names = ["gx"] if len(run.xs) == 1 else [f"gx{i}" for i in range(len(run.xs))]
        if len(back) != len(names):
            raise LayerCheckError(f"benchmark_layer({label}): reference_backward returned {len(back)} input "
                                  f"gradient(s) for {len(names)} input(s)")
        want.update(zip(names, back))
        for key, g in grads.items():
            if f"grad {key}" not in got:
                known = ", ".join(sorted(run.params_host)) or "none"
                raise LayerCheckError(f"benchmark_layer({label}): reference_backward returned a gradient for "
                                      f"{key!r}; the layer's parameters are {known}")
            want[f"grad {key}"] = g
    for what, ref in want.items():
        _agree(label, what, got[what], ref, rtol)
    return list(want)


def _agree(label: str, what: str, got: np.ndarray, ref: Any, rtol: float) -> None:
    ref = np.asarray(ref)
    if ref.shape != got.shape:
        raise LayerCheckError(f"benchmark_layer({label}) [reference agrees] {what}: the reference gives shape "
                              f"{ref.shape}, the layer {got.shape}; timing them side by side would compare "
                              f"different computations")
    a, b = got.astype(np.float64), ref.astype(np.float64)
    scale = float(np.abs(b).max()) if b.size else 0.0
    err = np.abs(a - b)
    bad = ~(err <= rtol * scale)  # NaN counts as a difference
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -np.inf))), a.shape)
        raise LayerCheckError(
            f"benchmark_layer({label}) [reference agrees] {what}: {int(bad.sum())} of {a.size} elements differ "
            f"by more than {rtol:g} x {scale:.4g} (the reference's largest magnitude); worst at index "
            f"{tuple(int(j) for j in i)}: layer {a[i]:.8g}, reference {b[i]:.8g}. The two do not compute the "
            f"same thing, so their times cannot be compared; fix the layer or the reference (or loosen rtol=)")


def layer_label(layer: Layer) -> str:
    """The layer's name with the constructor arguments that differ from their defaults:
    ``conv2d(out_channels=32, kernel_size=3)``, or ``relu``."""
    sig = inspect.signature(type(layer).__init__).parameters
    shown = []
    for key, value in layer.config.items():
        default = sig[key].default if key in sig else inspect.Parameter.empty
        if isinstance(default, tuple):
            default = list(default)
        if default is inspect.Parameter.empty or default != value:
            shown.append(f"{key}={value!r}")
    name = type(layer).name or type(layer).__name__
    return f"{name}({', '.join(shown)})" if shown else name


def _full_shapes(label: str, input_shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(operator.index(s) for s in shape) for shape in input_shapes]
    except TypeError:
        shapes = []
    if not shapes or any(len(s) < 2 or min(s) < 1 for s in shapes):
        raise ValueError(f"benchmark_layer({label}): input_shapes must be a list of full shapes, batch first, "
                         f"every size a positive int (e.g. [(32, 16, 28, 28)]), found {input_shapes!r}")
    if len({s[0] for s in shapes}) != 1:
        raise ValueError(f"benchmark_layer({label}): the inputs' batch sizes differ: {shapes}")
    return shapes


def _shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
