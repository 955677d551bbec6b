"""The conformance kit: ``check_layer`` tests one layer, built-in or plugin, in one call.

Checks, in order: the class fulfils the contract; the config survives a JSON round trip;
shape inference accepts the inputs; forward and backward run; the same results with one and
with all Numba threads (a ``prange`` race shows up as a difference); direct calls obey the
contract (right shapes and dtypes, inputs left alone, parameter gradients added, only the
input gradients asked for); inference with shared buffers gives the training-path output;
the forward against a naive reference the caller supplies; float64 finite-difference
gradients for every input and parameter; float32 in gives float32 out (no float64 leaks) and
agrees with float64; CPU/CUDA parity when CUDA or the simulator is available; the shape
errors the caller lists. Before every checked run the layer's pooled buffers are filled
with NaN, so reading memory it never wrote shows up. A failure raises ``LayerCheckError``
naming the check, the layer and its input shapes, where, and by how much.

``run_fenced`` runs a layer once with every array it touches inside a NaN-marked margin, for
tests that sweep geometries against their own references: a kernel reading past an array
brings NaN into the results, one writing past it raises ``FenceError``.

``check_installed_layer`` runs the kit on a registered layer with the examples its class
declares (``examples()``); ``numbacnn layers --check NAME`` prints its report.

``benchmark_layer`` times a layer's forward, or forward and backward, with pytest-benchmark
(compiled before the timer starts), beside a reference implementation in the same group once
the two agree; numbacnn's pytest plugin offers it as the ``benchmark_layer`` fixture.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Sequence

import numpy as np

from ._layer_checks import (
    Checker, LayerCheckError, build_model, check_bad_shape, check_calls, check_fd, check_inference,
    check_threads, compare, close, numeric_grad, results, run,
)
from ._benchmark import benchmark_layer
from ._fenced import FenceError, FencedRun, run_fenced
from .device import cuda_available
from .layer import Layer
from .registry import check_contract, layer_devices

__all__ = ["check_layer", "check_installed_layer", "LayerCheckError", "ConformanceReport", "numeric_grad",
           "run_fenced", "FencedRun", "FenceError", "benchmark_layer"]


def check_layer(
    layer: Layer,
    input_shapes: Sequence[Sequence[int]],
    reference: Callable[..., np.ndarray] | None = None,
    *,
    training: bool = False,
    inputs: Sequence[np.ndarray] | None = None,
    params: dict[str, np.ndarray] | None = None,
    bad_shapes: Sequence[tuple[Sequence[Sequence[int]], str]] = (),
    grad_inputs: Sequence[bool] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    fd_eps: float = 1e-6,
    fd_rtol: float = 1e-5,
    fd_atol: float = 1e-7,
    fd_points: int = 12,
    threads: bool = True,
    cuda: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Check ``layer`` on inputs of full shapes ``input_shapes`` (batch first).

    ``reference(*xs, **params)`` is a naive NumPy version of the forward (float64 in, out);
    ``inputs`` replaces the random normal inputs, ``params`` the initial parameters (by short
    name, e.g. ``"weight"``); ``grad_inputs`` says which inputs have a gradient to check
    (all by default); ``bad_shapes`` lists ``(input_shapes, text)`` pairs that must fail shape
    inference with a message containing the node name and ``text``. ``threads=False`` skips
    the 1-vs-all-threads run; ``cuda=None`` checks CPU/CUDA parity whenever CUDA (or the
    simulator) is available and the layer has kernels. Returns the checks passed
    (``"checks"``), those skipped and why (``"skipped"``), and the largest errors seen.
    """
    cls = type(layer)
    shapes = [tuple(int(s) for s in shape) for shape in input_shapes]
    chk = Checker(layer, shapes)
    report: dict[str, Any] = {"checks": chk.passed, "skipped": chk.skipped}
    with chk.check("contract"):
        problems = check_contract(cls)
        n_in = cls.n_inputs
        if (n_in is None and len(shapes) < 2) or (n_in is not None and len(shapes) != n_in):
            problems.append(f"n_inputs={n_in!r} but {len(shapes)} input shape(s) were given")
        if problems:
            chk.fail("contract", "; ".join(problems))
    with chk.check("spec round trip"):
        again = cls(**json.loads(json.dumps(layer.config)))
        if again.config != layer.config:
            chk.fail("spec round trip", f"config {layer.config} came back as {again.config}")

    rng = np.random.default_rng(seed)
    xs64 = [np.array(x, np.float64) for x in inputs] if inputs is not None else \
        [rng.standard_normal(s) for s in shapes]
    with chk.check("output shape"):
        m64 = build_model(layer, shapes, "float64", seed)
        for key, value in (params or {}).items():
            m64.params[f"layer.{key}"][...] = value
    want_gx = list(grad_inputs) if grad_inputs is not None else [True] * len(shapes)
    gy64 = rng.standard_normal((shapes[0][0], *m64.shapes["layer"]))

    with chk.check("forward and backward run"):
        run(m64, xs64, gy64, training)  # also compiles the float64 kernels
        base = run(m64, xs64, gy64, training)
    if threads:
        check_threads(chk, m64, xs64, gy64, training, base, want_gx)
    if all(np.isfinite(x).all() for x in xs64):
        with chk.check("no reads of unwritten memory"):
            for what, arr in results(base, want_gx):
                if np.isnan(arr).any():
                    chk.fail("no reads of unwritten memory", f"{what} holds NaN for finite inputs: was a buffer "
                             f"read before it was written? (the kit fills ctx.empty buffers with NaN; if NaN "
                             f"is right here, pass inputs= from the layer's domain)")
    with chk.check("layer calls"):
        check_calls(chk, m64, xs64, gy64, training)
    with chk.check("inference with shared buffers"):
        check_inference(chk, layer, m64, xs64, shapes, training, seed, base[0])

    y64, gxs64, grads64 = base
    if reference is None:
        chk.skipped.append("forward vs reference: no reference given")
    else:
        with chk.check("forward vs reference (float64)"):
            short = {k.split(".", 1)[1]: v for k, v in m64.params.items()}
            ref = np.asarray(reference(*[x.copy() for x in xs64], **{k: v.copy() for k, v in short.items()}))
            ok, why = close(y64, ref, 1e-7, 1e-9)
            if not ok:
                chk.fail("forward vs reference (float64)", why)
            report["forward_ref_max_abs"] = float(np.abs(y64 - ref).max())
    with chk.check("gradients vs finite differences (float64)"):
        report["fd_max_abs"] = check_fd(chk, m64, xs64, gy64, training, base, want_gx, rng,
                                        fd_eps, fd_rtol, fd_atol, fd_points)
    with chk.check("float32 in, float32 out"):
        m32 = m64.astype("float32")
        xs32 = [x.astype(np.float32) for x in xs64]
        run32 = run(m32, xs32, gy64.astype(np.float32), training)
        for what, arr in results(run32, [True] * len(shapes)):
            if arr is not None and arr.dtype != np.float32:
                chk.fail("float32 in, float32 out", f"{what} is {arr.dtype}")
        for buf in m32._executor.ctxs["layer"]._pool:
            if buf.dtype == np.float64:
                chk.fail("float32 in, float32 out", f"the layer allocated a float64 buffer of shape "
                         f"{tuple(buf.shape)} in a float32 model (ctx.empty(..., dtype=float64))")
    with chk.check("float32 vs float64"):
        compare(chk, "float32 vs float64", run32, base, want_gx, rtol, atol)

    if cuda is None:
        cuda = cuda_available() and "cuda" in layer_devices(cls)
        if not cuda:
            why = "the layer has no CUDA kernels" if "cuda" not in layer_devices(cls) else \
                "no GPU and NUMBA_ENABLE_CUDASIM is not set"
            chk.skipped.append(f"CUDA vs CPU: {why}")
    if cuda:
        for model, xs, ref, tol in ((m32, xs32, run32, 1e-5), (m64, xs64, base, 1e-10)):
            name = f"CUDA vs CPU ({model.dtype.name})"
            with chk.check(name):
                gpu = model.astype(model.dtype).to("cuda")
                run(gpu, xs, gy64.astype(model.dtype), training)
                compare(chk, name, run(gpu, xs, gy64.astype(model.dtype), training), ref, want_gx,
                        tol, tol * 0.1)

    if bad_shapes:
        with chk.check("shape errors"):
            for bad, text in bad_shapes:
                check_bad_shape(chk, layer, bad, text, seed)
    return report


class ConformanceReport(list):
    """The lines of ``check_installed_layer``'s report; ``passed`` is False if any example failed."""

    passed: bool = True


_EXAMPLE_KEYS = {"config", "input_shapes"} | {
    p for p in inspect.signature(check_layer).parameters if p not in ("layer", "input_shapes")}


def check_installed_layer(cls: type[Layer]) -> ConformanceReport:
    """Run ``check_layer`` on a registered layer class with the examples it declares.

    A layer declares them with a classmethod ``examples()`` returning a list of dicts:
    ``config`` (constructor arguments), ``input_shapes`` (full shapes, batch first), and any
    keyword argument of ``check_layer`` (``reference``, ``bad_shapes``, ``training``, ...). A
    class without ``examples()`` is tried with its default constructor on (2, 3, 5, 5) input(s).
    Never raises for a failing check: each example gives a PASS or FAIL line.
    """
    from .registry import layer_info

    report = ConformanceReport()
    name = getattr(cls, "name", "") or cls.__name__
    try:
        info = layer_info(name)
        origin = f"{info['class']} from {info['distribution']} {info['version']}"
    except Exception:  # an unregistered class still gets checked
        origin = f"{cls.__module__}:{cls.__qualname__} (not registered)"
    report.append(f"{name}: {origin}; devices: {', '.join(layer_devices(cls)) or 'none'}")
    try:
        examples, declared = _examples(cls)
    except (TypeError, ValueError) as e:
        report.append(f"FAIL  {name}: {e}")
        report.passed = False
        return report
    failed = 0
    for ex in examples:
        kwargs = {k: v for k, v in ex.items() if k not in ("config", "input_shapes")}
        shapes = [tuple(s) for s in ex["input_shapes"]]
        try:
            layer = cls(**ex.get("config", {}))
            out = check_layer(layer, shapes, **kwargs)
        except LayerCheckError as e:
            failed += 1
            report.append(f"FAIL  {e}")
            continue
        except Exception as e:  # building the layer from its own example failed
            failed += 1
            hint = "" if declared else " (declare examples() on the class to say how to build it)"
            report.append(f"FAIL  {name} with config {ex.get('config', {})} on {', '.join(map(str, shapes))}: "
                          f"{type(e).__name__}: {e}{hint}")
            continue
        fd = f"; finite-difference max error {out['fd_max_abs']:.2g}" if "fd_max_abs" in out else ""
        report.append(f"PASS  {layer!r} on {', '.join(map(str, shapes))}: {len(out['checks'])} checks{fd}")
        report.extend(f"      skipped {s}" for s in out["skipped"])
    report.passed = failed == 0
    report.append(f"{name}: {len(examples) - failed} of {len(examples)} example(s) passed")
    return report


def _examples(cls: type[Layer]) -> tuple[list[dict[str, Any]], bool]:
    """The examples a class declares (and True), or the default-constructor guess (and False)."""
    examples = cls.examples() if callable(getattr(cls, "examples", None)) else None
    if not examples:
        return [{"config": {}, "input_shapes": [(2, 3, 5, 5)] * (cls.n_inputs or 2)}], False
    if not isinstance(examples, (list, tuple)):
        raise TypeError(f"{cls.__qualname__}.examples() must return a list of dicts, found {examples!r}")
    for ex in examples:
        if not isinstance(ex, dict) or "input_shapes" not in ex:
            raise TypeError(f"{cls.__qualname__}.examples(): each example is a dict with 'input_shapes', found {ex!r}")
        unknown = set(ex) - _EXAMPLE_KEYS
        if unknown:
            raise ValueError(f"{cls.__qualname__}.examples(): unknown key(s) {', '.join(sorted(unknown))}; "
                             f"expected config, input_shapes or check_layer arguments")
    return list(examples), True
