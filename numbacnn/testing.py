"""``check_layer``: one call that tests a layer, built-in or plugin.

It checks that the class fulfils the contract, that the config survives a JSON round trip,
the forward against a naive reference the caller supplies, float64 finite-difference gradients
for every input and parameter, that float32 in gives float32 out, the same results with one
and with all Numba threads (a ``prange`` race shows up as a difference), CPU/CUDA parity when
CUDA or the simulator is available, and the shape errors the caller lists. A failure raises
``LayerCheckError`` saying which check failed, on which input, and by how much.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np

from .device import cuda_available
from .graph import Graph
from .layer import Layer, ShapeError
from .model import Model
from .registry import check_contract, layer_devices

__all__ = ["check_layer", "LayerCheckError", "numeric_grad"]


class LayerCheckError(AssertionError):
    """A check of ``check_layer`` failed."""


def _fail(layer: Layer, check: str, detail: str) -> None:
    raise LayerCheckError(f"check_layer({type(layer).name}) [{check}]: {detail}")


def _model(layer: Layer, shapes: Sequence[Sequence[int]], dtype: str, seed: int) -> Model:
    g = Graph()
    ins = [g.input(tuple(s[1:]), name=f"x{i}") for i, s in enumerate(shapes)]
    g.output(g.add_layer(layer, *ins, name="layer"))
    return Model(g, seed=seed, dtype=dtype)


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[bool, str]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False, f"shape {a.shape} vs {b.shape}"
    err = np.abs(a - b)
    tol = atol + rtol * np.abs(b)
    bad = err > tol
    if not bad.any():
        return True, ""
    i = np.unravel_index(np.argmax(err - tol), a.shape)
    return False, (f"{int(bad.sum())} of {a.size} elements differ; worst at index {tuple(int(j) for j in i)}: "
                   f"{a[i]:.8g} vs expected {b[i]:.8g} (diff {err[i]:.3g}, tolerance {tol[i]:.3g})")


def numeric_grad(f: Callable[[], float], x: np.ndarray, index: tuple[int, ...], eps: float) -> float:
    """Central finite difference of ``f`` with respect to ``x[index]`` (``x`` changed in place)."""
    old = x[index]
    x[index] = old + eps
    fp = f()
    x[index] = old - eps
    fm = f()
    x[index] = old
    return (fp - fm) / (2 * eps)


def _run(model: Model, xs: Sequence[np.ndarray], gy: np.ndarray | None, training: bool) -> tuple:
    model._executor.reset_rng()
    model.zero_grad()
    y = model.forward(*xs, training=training, grad=gy is not None)
    if gy is None:
        return y, None, None
    gxs = model.backward(gy)
    gxs = gxs if isinstance(gxs, tuple) else (gxs,)
    host = model._executor.backend.to_host
    return y, gxs, {k: host(v) for k, v in model.grads.items()}


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
    name, e.g. ``"weight"``); ``bad_shapes`` lists ``(input_shapes, text)`` pairs that must fail
    shape inference with a message containing the node name and ``text``. ``cuda=None`` checks
    CPU/CUDA parity whenever CUDA (or the simulator) is available and the layer has kernels.
    Returns the largest errors seen, per check.
    """
    cls = type(layer)
    problems = check_contract(cls)
    if problems:
        _fail(layer, "contract", "; ".join(problems))
    report: dict[str, Any] = {}
    try:
        again = cls(**json.loads(json.dumps(layer.config)))
    except Exception as e:  # any failure here is the finding
        _fail(layer, "spec round trip", f"{cls.__name__}(**config) failed: {type(e).__name__}: {e}")
    if again.config != layer.config:
        _fail(layer, "spec round trip", f"config {layer.config} came back as {again.config}")

    shapes = [tuple(int(s) for s in shape) for shape in input_shapes]
    rng = np.random.default_rng(seed)
    xs64 = [np.array(x, np.float64) for x in inputs] if inputs is not None else \
        [rng.standard_normal(s) for s in shapes]
    m64 = _model(layer, shapes, "float64", seed)
    for key, value in (params or {}).items():
        m64.params[f"layer.{key}"][...] = value
    short = {k.split(".", 1)[1]: v for k, v in m64.params.items()}
    y64 = m64.forward(*xs64, training=training)
    if reference is not None:
        ref = np.asarray(reference(*[x.copy() for x in xs64], **{k: v.copy() for k, v in short.items()}))
        ok, why = _close(y64, ref, 1e-7, 1e-9)
        if not ok:
            _fail(layer, "forward vs reference (float64)", why)
        report["forward_ref_max_abs"] = float(np.abs(y64 - ref).max())

    # Gradients: loss = sum(y * gy) for a random gy, against central differences in float64.
    gy64 = rng.standard_normal(y64.shape)
    _, gxs64, grads64 = _run(m64, xs64, gy64, training)

    def loss() -> float:
        m64._executor.reset_rng()
        return float(np.sum(m64.forward(*xs64, training=training) * gy64))

    want_gx = list(grad_inputs) if grad_inputs is not None else [True] * len(shapes)
    targets = [(f"input {i}", xs64[i], gxs64[i]) for i in range(len(shapes)) if want_gx[i]]
    targets += [(f"parameter '{k}'", m64.params[k], grads64[k]) for k in m64.params]
    worst = 0.0
    for what, arr, analytic in targets:
        flat = rng.permutation(arr.size)[:fd_points]
        for j in flat:
            idx = np.unravel_index(int(j), arr.shape)
            fd = numeric_grad(loss, arr, idx, fd_eps)
            a = float(analytic[idx])
            scale = max(1.0, float(np.abs(analytic).max()))
            if abs(a - fd) > fd_atol * scale + fd_rtol * abs(fd) + 1e-6 * scale:
                _fail(layer, "gradient vs finite differences (float64)",
                      f"{what} at index {tuple(int(t) for t in idx)}: analytic {a:.10g}, finite difference "
                      f"{fd:.10g} (diff {abs(a - fd):.3g})")
            worst = max(worst, abs(a - fd))
    report["fd_max_abs"] = worst

    # float32 stays float32, and agrees with float64.
    m32 = m64.astype("float32")
    xs32 = [x.astype(np.float32) for x in xs64]
    y32, gxs32, grads32 = _run(m32, xs32, gy64.astype(np.float32), training)
    for what, arr in [("output", y32), *((f"input {i} gradient", g) for i, g in enumerate(gxs32)),
                      *((f"gradient '{k}'", g) for k, g in grads32.items())]:
        if arr.dtype != np.float32:
            _fail(layer, "float32 in, float32 out", f"{what} is {arr.dtype}")
    for what, a, b in [("output", y32, y64), *((f"input {i} gradient", gxs32[i], gxs64[i]) for i in range(len(shapes)) if want_gx[i]),
                       *((f"gradient '{k}'", grads32[k], grads64[k]) for k in grads64)]:
        scale = max(1.0, float(np.abs(b).max()))
        ok, why = _close(a, b, rtol, atol * scale)
        if not ok:
            _fail(layer, "float32 vs float64", f"{what}: {why}")

    if threads:
        import numba

        full = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            one = _run(m32, xs32, gy64.astype(np.float32), training)
        finally:
            numba.set_num_threads(full)
        for what, a, b in [("output", one[0], y32), *((f"gradient '{k}'", one[2][k], grads32[k]) for k in grads32),
                           *((f"input {i} gradient", one[1][i], gxs32[i]) for i in range(len(shapes)) if want_gx[i])]:
            scale = max(1.0, float(np.abs(b).max()))
            ok, why = _close(a, b, 1e-5, 1e-6 * scale)
            if not ok:
                _fail(layer, f"1 thread vs {full} threads (a prange race?)", f"{what}: {why}")

    if cuda is None:
        cuda = cuda_available() and "cuda" in layer_devices(cls)
    if cuda:
        report.update(_check_cuda(layer, m32, xs32, gy64, training, y32, gxs32, grads32, want_gx))
        report.update(_check_cuda(layer, m64, xs64, gy64, training, y64, gxs64, grads64, want_gx, 1e-10))

    for bad, text in bad_shapes:
        try:
            _model(layer, [tuple(s) for s in bad], "float32", seed)
        except ShapeError as e:
            if "'layer'" not in str(e) or text not in str(e):
                _fail(layer, "shape error message", f"for input shapes {bad}: expected the node name and "
                      f"{text!r} in the message, found {str(e)!r}")
        else:
            _fail(layer, "shape error", f"input shapes {bad} were accepted; expected a ShapeError mentioning {text!r}")
    return report


def _check_cuda(layer, model, xs, gy, training, y, gxs, grads, want_gx, rtol=1e-5) -> dict[str, Any]:
    gpu = model.astype(model.dtype).to("cuda")
    yc, gxc, gc = _run(gpu, xs, gy.astype(model.dtype), training)
    for what, a, b in [("output", yc, y), *((f"input {i} gradient", gxc[i], gxs[i]) for i in range(len(xs)) if want_gx[i]),
                       *((f"gradient '{k}'", gc[k], grads[k]) for k in grads)]:
        scale = max(1.0, float(np.abs(b).max()))
        ok, why = _close(a, b, rtol, rtol * 0.1 * scale)
        if not ok:
            _fail(layer, f"CUDA vs CPU ({model.dtype.name})", f"{what}: {why}")
    return {f"cuda_{model.dtype.name}": "ok"}
