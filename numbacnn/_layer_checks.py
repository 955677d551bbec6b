"""The checks behind ``numbacnn.testing.check_layer``, one function per check.

Each runs the layer through a one-node model (or calls its methods directly, as the executor
does) and reports through ``Checker``, which names the check, the layer and its input shapes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, NoReturn, Sequence

import numpy as np

from .graph import Graph
from .layer import Ctx, Layer, Shape, ShapeError
from .model import Model


class LayerCheckError(AssertionError):
    """A check of ``check_layer`` failed."""


class Checker:
    """Names the check under way in every failure, and turns a crash into a finding."""

    def __init__(self, layer: Layer, shapes: list[Shape]) -> None:
        self.title = f"check_layer({type(layer).name or type(layer).__name__})"
        self.where = f"{layer!r} on input shapes {', '.join(map(str, shapes))}"
        self.passed: list[str] = []
        self.skipped: list[str] = []

    def fail(self, check: str, detail: str) -> NoReturn:
        raise LayerCheckError(f"{self.title} [{check}] {self.where}: {detail}")

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except LayerCheckError:
            raise
        except Exception as e:  # whatever the layer raised is the finding
            raise LayerCheckError(
                f"{self.title} [{name}] {self.where}: raised {type(e).__name__}: {e}") from e
        self.passed.append(name)


class Copy(Layer):
    """y = x in a fresh buffer: puts the checked layer's input in the inference arena."""

    name = "_check_copy"
    inplace_ok = False
    kernels = None  # the backend copies, on either device

    def output_shape(self, x_shape: Shape) -> Shape:
        return x_shape

    def forward(self, ctx: Ctx, x: Any) -> Any:
        y = ctx.empty_like(x)
        ctx.backend.assign(y, x)
        return y

    def backward(self, ctx: Ctx, gy: Any) -> Any:
        return gy


def build_model(layer: Layer, shapes: Sequence[Shape], dtype: str, seed: int, copy_first: bool = False,
                then: Layer | None = None) -> Model:
    """``layer`` alone on inputs of ``shapes`` (behind copies when ``copy_first``), followed by
    ``then`` when given (a relu training fuses into it: numbacnn._precompile)."""
    g = Graph()
    ins = [g.input(tuple(s[1:]), name=f"x{i}") for i, s in enumerate(shapes)]
    if copy_first:
        ins = [g.add_layer(Copy(), x, name=f"copy{i}") for i, x in enumerate(ins)]
    y = g.add_layer(layer, *ins, name="layer")
    g.output(y if then is None else g.add_layer(then, y, name="then"))
    return Model(g, seed=seed, dtype=dtype)


def close(a: Any, b: Any, rtol: float, atol: float, equal_nan: bool = False) -> tuple[bool, str]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False, f"shape {a.shape}, expected {b.shape}"
    err = np.abs(a - b)
    tol = atol + rtol * np.abs(b)
    bad = ~(err <= tol)  # NaN counts as a difference
    if equal_nan:
        bad &= ~(np.isnan(a) & np.isnan(b))
    if not bad.any():
        return True, ""
    i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(err - tol, nan=np.inf), -np.inf))), a.shape)
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


def poison(model: Model) -> None:
    """Fill the pooled float buffers of every node with NaN (catches reads of unwritten memory)."""
    for ctx in model._executor.ctxs.values():
        for buf in ctx._pool:
            if buf.dtype.kind == "f":
                ctx.backend.fill(buf, np.nan)


def run(model: Model, xs: Sequence[np.ndarray], gy: np.ndarray | None, training: bool) -> tuple:
    """Forward (and backward) on copies: a layer that writes into its input spoils no later run."""
    poison(model)
    model._executor.reset_rng()
    model.zero_grad()
    y = model.forward(*(x.copy() for x in xs), training=training, grad=gy is not None)
    if gy is None:
        return y, None, None
    gxs = model.backward(gy.copy())
    gxs = gxs if isinstance(gxs, tuple) else (gxs,)
    host = model._executor.backend.to_host
    return y, gxs, {k.split(".", 1)[1]: host(v) for k, v in model.grads.items()}


def results(outcome: tuple, want_gx: list[bool]) -> list[tuple[str, Any]]:
    """(what, array) pairs of one run: the output, the wanted input gradients, parameter gradients."""
    y, gxs, grads = outcome
    return [("output", y), *((f"input {i} gradient", g) for i, g in enumerate(gxs) if want_gx[i]),
            *((f"gradient of parameter '{k}'", g) for k, g in grads.items())]


def compare(chk: Checker, check: str, got: tuple, want: tuple, want_gx: list[bool], rtol: float,
            atol: float, equal_nan: bool = False) -> None:
    for (what, a), (_, b) in zip(results(got, want_gx), results(want, want_gx)):
        scale = max(1.0, float(np.nanmax(np.abs(b), initial=0.0)))
        ok, why = close(a, b, rtol, atol * scale, equal_nan)
        if not ok:
            chk.fail(check, f"{what}: {why}")


def check_threads(chk: Checker, model: Model, xs: list, gy: np.ndarray, training: bool, base: tuple,
                  want_gx: list[bool]) -> None:
    import numba

    full = numba.get_num_threads()
    if full < 2:
        chk.skipped.append("1 thread vs all threads: Numba has only one thread here")
        return
    name = f"1 thread vs {full} threads (a prange race?)"
    with chk.check(name):
        numba.set_num_threads(1)
        try:
            one = run(model, xs, gy, training)
        finally:
            numba.set_num_threads(full)
        # A race shows only when threads overlap: a second parallel run doubles the chances.
        for outcome in (base, run(model, xs, gy, training)):
            compare(chk, name, outcome, one, want_gx, 1e-7, 1e-9, equal_nan=True)


def check_calls(chk: Checker, model: Model, xs: list, gy: np.ndarray, training: bool) -> None:
    """Call the layer's forward/backward directly, as the executor does, and hold it to the contract."""
    check = "layer calls"
    layer = model.graph.nodes["layer"].obj
    ex = model._executor
    ctx = ex.ctxs["layer"]
    xs_in = [x.copy() for x in xs]
    gy_in = gy.copy()
    want_y = (len(gy), *model.shapes["layer"])

    def step(needs: bool) -> tuple:
        ex.reset_rng()
        ctx.begin(training)
        y = layer.forward(ctx, *xs_in)
        if tuple(y.shape) != want_y or y.dtype != model.dtype:
            chk.fail(check, f"forward returned {y.dtype} {tuple(y.shape)}, expected {model.dtype} {want_y}")
        for i, (a, b) in enumerate(zip(xs_in, xs)):
            if not np.array_equal(a, b, equal_nan=True):
                chk.fail(check, f"forward wrote into input {i} (allowed only when ctx.inplace is set)")
        ctx.needs_input_grad = (needs,) * len(xs)
        gxs = layer.backward(ctx, gy_in)
        if not np.array_equal(gy_in, gy, equal_nan=True):
            chk.fail(check, "backward wrote into its output gradient gy")
        gxs = gxs if isinstance(gxs, tuple) else (gxs,)
        if len(gxs) != len(xs):
            chk.fail(check, f"backward returned {len(gxs)} gradient(s) for {len(xs)} input(s)")
        return gxs

    model.zero_grad()
    for i, (gx, x) in enumerate(zip(step(True), xs)):
        if gx is None:
            chk.fail(check, f"backward returned None for input {i}, which ctx.needs_input_grad asked for")
        if tuple(gx.shape) != x.shape or gx.dtype != model.dtype:
            chk.fail(check, f"gradient of input {i} is {gx.dtype} {tuple(gx.shape)}, expected {model.dtype} {x.shape}")
    once = {k: np.array(v) for k, v in model.grads.items()}
    step(True)
    for key, g in model.grads.items():
        ok, why = close(g, 2 * once[key], 1e-9, 1e-12 * max(1.0, float(np.abs(once[key]).max())))
        if not ok:
            chk.fail(check, f"gradient of parameter '{key.split('.', 1)[1]}' is not added into ctx.grads "
                     f"(after two backward passes it should double): {why}")
    if model.params or len(xs) != 1:
        for i, gx in enumerate(step(False)):
            if gx is not None:
                chk.fail(check, f"backward computed the gradient of input {i}, which ctx.needs_input_grad "
                         f"did not ask for (return None there)")
    model.zero_grad()


def check_inference(chk: Checker, layer: Layer, model: Model, xs: list, shapes: list[Shape],
                    training: bool, seed: int, y: np.ndarray) -> None:
    check = "inference with shared buffers"
    model._executor.reset_rng()
    ok, why = close(model.forward(*xs, training=training, grad=False), y, 1e-12, 1e-12)
    if not ok:
        chk.fail(check, f"forward(grad=False) differs from forward(grad=True): {why}")
    if type(layer).inplace_ok and len(xs) == 1:
        inplace = build_model(layer, shapes, "float64", seed, copy_first=True)
        for key, value in model.params.items():
            inplace.params[key][...] = value
        for key, value in model.buffers.items():
            inplace.buffers[key][...] = value
        inplace._executor.reset_rng()
        ok, why = close(inplace.forward(*xs, training=training, grad=False), y, 1e-12, 1e-12)
        if not ok:
            chk.fail(check, f"the in-place forward (ctx.inplace set) differs: {why}")


def check_fd(chk: Checker, model: Model, xs: list, gy: np.ndarray, training: bool, base: tuple,
             want_gx: list[bool], rng: np.random.Generator, eps: float, rtol: float, atol: float,
             points: int) -> float:
    """Gradients of loss = sum(y * gy) against central differences, at random elements."""
    check = "gradients vs finite differences (float64)"
    _, gxs, grads = base

    def loss() -> float:
        model._executor.reset_rng()
        return float(np.sum(model.forward(*(x.copy() for x in xs), training=training, grad=False) * gy))

    targets = [(f"input {i}", xs[i], gxs[i]) for i in range(len(xs)) if want_gx[i]]
    targets += [(f"parameter '{k.split('.', 1)[1]}'", v, grads[k.split(".", 1)[1]]) for k, v in model.params.items()]
    worst = 0.0
    for what, arr, analytic in targets:
        scale = max(1.0, float(np.abs(analytic).max()))
        for j in rng.permutation(arr.size)[:points]:
            idx = np.unravel_index(int(j), arr.shape)
            fd = numeric_grad(loss, arr, idx, eps)
            a = float(analytic[idx])
            if not abs(a - fd) <= atol * scale + rtol * abs(fd) + 1e-6 * scale:
                chk.fail(check, f"{what} at index {tuple(int(t) for t in idx)}: analytic {a:.10g}, "
                         f"finite difference {fd:.10g} (diff {abs(a - fd):.3g})")
            worst = max(worst, abs(a - fd))
    return worst


def check_bad_shape(chk: Checker, layer: Layer, bad: Sequence[Sequence[int]], text: str, seed: int) -> None:
    try:
        build_model(layer, [tuple(s) for s in bad], "float32", seed)
    except ShapeError as e:
        if "'layer'" not in str(e) or text not in str(e):
            chk.fail("shape errors", f"for input shapes {bad}: expected the node name and {text!r} in "
                     f"the message, found {str(e)!r}")
    else:
        chk.fail("shape errors", f"input shapes {bad} were accepted; expected a ShapeError mentioning {text!r}")
