"""The workloads and their peers: numbacnn, PyTorch CPU (built from the same weights) and a
naive NumPy im2col + matmul convolution.

Every peer of a workload does the same work: the same shapes, the same weights (a model's
PyTorch peer is ``_twin.torch_twin(model)``, its graph walked into torch.nn with numbacnn's
weights copied in), the same gradients asked for. ``check_same`` compares their outputs once, outside the timer, so a
ratio is never read off two different computations. PyTorch is imported only by the functions
that build its peers; callers skip when it is missing.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

import numbacnn as nc
from numbacnn.device import get_backend
from numbacnn.layer import Ctx

#: Threads for both engines (numba, torch, BLAS); the conftest applies it when the session starts.
THREADS = int(os.environ.get("NUMBACNN_BENCH_THREADS", "2"))

# (N, C, H, W, K, kernel, stride, padding), the conv workloads.
CONV_SHAPES = [
    (64, 1, 28, 28, 20, 5, 1, 0),
    (64, 20, 12, 12, 40, 5, 1, 0),
    (32, 64, 32, 32, 64, 3, 1, 1),
    (32, 256, 16, 16, 64, 1, 1, 0),
    (32, 64, 16, 16, 256, 1, 1, 0),
    (8, 192, 28, 28, 64, 1, 1, 0),
    (8, 96, 28, 28, 128, 3, 1, 1),
    (8, 16, 28, 28, 32, 5, 1, 2),
]
SMOKE_BATCH = 2


def conv_id(shape: tuple[int, ...]) -> str:
    N, C, H, W, K, k, s, p = shape
    return f"N{N}-{C}x{H}x{W}-K{K}-k{k}-s{s}-p{p}"


def conv_out(shape: tuple[int, ...]) -> int:
    _, _, H, _, _, k, s, p = shape
    return (H + 2 * p - k) // s + 1


def conv_flops(shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of one forward (the bias add left out)."""
    N, C, _, _, K, k, _, _ = shape
    P = conv_out(shape)
    return 2 * N * K * P * P * C * k * k


def conv_data(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, ...]:
    N, C, H, W, K, k, _, _ = shape
    rng = np.random.default_rng(seed)
    P = conv_out(shape)
    bound = 1.0 / np.sqrt(C * k * k)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.uniform(-bound, bound, (K, C, k, k)).astype(np.float32)
    b = rng.uniform(-bound, bound, (K,)).astype(np.float32)
    gy = rng.standard_normal((N, K, P, P), dtype=np.float32)
    return x, w, b, gy


# numbacnn -------------------------------------------------------------------------------------
class LayerRun:
    """One layer driven through a ``Ctx`` as the executor drives it: no Model, no host copies.

    ``forward()`` is inference; ``step()`` is forward in training mode, then backward with
    the input gradient asked for (the weight and bias gradients are added into ``grads``).
    On CUDA, both synchronise before returning.
    """

    def __init__(self, layer: nc.Layer, x: np.ndarray, params: dict[str, np.ndarray], gy: np.ndarray,
                 device: str = "cpu") -> None:
        backend = get_backend(device)
        self.layer, self.backend = layer, backend
        self.ctx = Ctx("bench", device, np.dtype(np.float32), backend, np.random.default_rng(0), layer=layer)
        self.ctx.params = {k: backend.to_device(v) for k, v in params.items()}
        self.ctx.grads = {k: backend.to_device(np.zeros_like(v)) for k, v in params.items()}
        self.ctx.needs_input_grad = (True,)
        self.x, self.gy = backend.to_device(x), backend.to_device(gy)

    def forward(self) -> Any:
        self.ctx.begin(False, grad=False)  # no backward to come: nothing kept for one, as PyTorch's inference_mode
        y = self.layer.forward(self.ctx, self.x)
        self.backend.synchronize()
        return y

    def step(self) -> Any:
        self.ctx.begin(True)
        y = self.layer.forward(self.ctx, self.x)
        gx = self.layer.backward(self.ctx, self.gy)
        self.backend.synchronize()
        return y, gx


def layer_call(run: LayerRun, mode: str) -> Callable[[], Any]:
    """The timed call of a parameterised layer (weight and bias): "forward" returns y, "step"
    returns (y, gx, gw, gb)."""
    if mode == "forward":
        return run.forward

    def step() -> tuple:
        y, gx = run.step()
        return y, gx, run.ctx.grads["weight"], run.ctx.grads["bias"]

    return step


def numbacnn_conv(shape: tuple[int, ...], data: tuple[np.ndarray, ...], device: str = "cpu") -> LayerRun:
    x, w, b, gy = data
    _, _, _, _, K, k, s, p = shape
    layer = nc.get_layer("conv2d")(out_channels=K, kernel_size=k, stride=s, padding=p)
    return LayerRun(layer, x, {"weight": w, "bias": b}, gy, device)


def train_step(model: nc.Model, opt: Any, x: np.ndarray, labels: np.ndarray) -> Callable[[], float]:
    """numbacnn's training step: zero_grad, forward, cross-entropy, backward, SGD update."""

    def step() -> float:
        opt.zero_grad()
        out = model.forward(x, training=True)
        loss, gy = nc.losses.cross_entropy(out, labels)
        model.backward(gy, input_grad=False)
        opt.step()
        return loss

    return step


def block_step(model: nc.Model, x: np.ndarray, gy: np.ndarray) -> Callable[[], Any]:
    """A block's forward (training mode: batch-norm batch statistics) and backward, input
    gradient included, as it runs inside a deeper net."""

    def step() -> Any:
        model.zero_grad()
        y = model.forward(x, training=True)
        return y, model.backward(gy)

    return step


def bottleneck_model(in_channels: int, mid: int, out: int, stride: int, hw: int) -> nc.Model:
    g = nc.Graph()
    x = g.input((in_channels, hw, hw))
    g.output(nc.blocks.bottleneck(g, x, mid_channels=mid, out_channels=out, stride=stride, name="b"))
    return nc.Model(g, seed=0)


INCEPTION_3A = dict(c1=64, c3_reduce=96, c3=128, c5_reduce=16, c5=32, pool_proj=32)


def inception_model(in_channels: int, hw: int) -> nc.Model:
    g = nc.Graph()
    x = g.input((in_channels, hw, hw))
    g.output(nc.blocks.inception(g, x, **INCEPTION_3A, name="b"))
    return nc.Model(g, seed=0)


# naive NumPy ------------------------------------------------------------------------------------
def _im2col(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """The textbook im2col: one strided slice copy per kernel tap, (C*k*k, N*P*Q)."""
    N, C, H, W = x.shape
    P, Q = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    col = np.empty((N, C, k, k, P, Q), x.dtype)
    for r in range(k):
        for t in range(k):
            col[:, :, r, t] = xp[:, :, r:r + s * P:s, t:t + s * Q:s]
    return col.transpose(1, 2, 3, 0, 4, 5).reshape(C * k * k, N * P * Q)


def numpy_conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int, p: int) -> np.ndarray:
    N, K, k = x.shape[0], w.shape[0], w.shape[2]
    P, Q = (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1
    y = w.reshape(K, -1) @ _im2col(x, k, s, p) + b[:, None]
    return np.ascontiguousarray(y.reshape(K, N, P, Q).transpose(1, 0, 2, 3))


def numpy_conv_step(x: np.ndarray, w: np.ndarray, b: np.ndarray, gy: np.ndarray, s: int,
                    p: int) -> tuple[np.ndarray, ...]:
    """Forward, then the weight, bias and input gradients (col2im by per-tap slice adds)."""
    N, C, H, W = x.shape
    K, k = w.shape[0], w.shape[2]
    P, Q = gy.shape[2], gy.shape[3]
    col = _im2col(x, k, s, p)
    y = np.ascontiguousarray((w.reshape(K, -1) @ col + b[:, None]).reshape(K, N, P, Q).transpose(1, 0, 2, 3))
    gy2 = gy.transpose(1, 0, 2, 3).reshape(K, -1)
    gw = (gy2 @ col.T).reshape(w.shape)
    gb = gy2.sum(axis=1)
    gcol = (w.reshape(K, -1).T @ gy2).reshape(C, k, k, N, P, Q)
    gxp = np.zeros((N, C, H + 2 * p, W + 2 * p), x.dtype)
    for r in range(k):
        for t in range(k):
            gxp[:, :, r:r + s * P:s, t:t + s * Q:s] += gcol[:, r, t].transpose(1, 0, 2, 3)
    return y, gw, gb, gxp[:, :, p:p + H, p:p + W]


# PyTorch ----------------------------------------------------------------------------------------
def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def torch_train_step(net: Any, x: np.ndarray, labels: np.ndarray) -> Callable[[], float]:
    import torch

    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    net.train()

    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def torch_block_step(net: Any, x: np.ndarray, gy: np.ndarray) -> Callable[[], Any]:
    import torch

    xt = torch.from_numpy(x.copy()).requires_grad_()
    gyt = torch.from_numpy(gy)
    net.train()

    def step() -> Any:
        net.zero_grad()
        xt.grad = None
        y = net(xt)
        y.backward(gyt)
        return y, xt.grad

    return step


def torch_conv_call(module: str, shape: tuple[int, ...], data: tuple[np.ndarray, ...], device: str,
                    mode: str) -> Callable[[], Any]:
    """PyTorch's peer of a conv workload: ``torch.nn.<module>(C, K, k, s, p)`` holding data's
    weight and bias; "forward" returns y (inference mode), "step" (y, gx, gw, gb). On CUDA,
    both synchronise before returning."""
    import torch

    x, w, b, gy = data
    _, C, _, _, K, k, s, p = shape
    conv = getattr(torch.nn, module)(C, K, k, s, p).to(device)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    xt, gyt = torch.from_numpy(x).to(device), torch.from_numpy(gy).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode == "forward":
        def forward() -> Any:
            with torch.inference_mode():
                y = conv(xt)
            sync()
            return y

        return forward
    xt.requires_grad_()

    def step() -> tuple:
        conv.zero_grad()
        xt.grad = None
        y = conv(xt)
        y.backward(gyt)
        sync()
        return y, xt.grad, conv.weight.grad, conv.bias.grad

    return step


# agreement --------------------------------------------------------------------------------------
def _host(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return np.asarray(a)


def check_same(what: str, got: Any, want: Any, rtol: float = 1e-3, l2: float | None = None) -> None:
    """Peers must compute the same values before their times are compared.

    Elementwise by default (float32 sums of up to ~30,000 terms: the tolerance is relative to
    the largest magnitude). ``l2``: the relative L2 error instead, for gradients through ReLUs,
    where one pre-activation within float32 rounding of zero flips a mask and moves a few
    hundred input-gradient entries by O(1), in either engine.
    """
    got, want = _host(got), _host(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: peers disagree on the shape, {got.shape} != {want.shape}")
    if l2 is not None:
        err = float(np.linalg.norm((got - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-30))
        if err > l2:
            raise AssertionError(f"{what}: peers disagree (relative L2 error {err:.2g} > {l2:g}); "
                                 f"the ratio would be meaningless")
        return
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-3)):
        err = float(np.max(np.abs(got - want)))
        raise AssertionError(f"{what}: peers disagree (max abs diff {err:.3g}, scale {scale:.3g}); "
                             f"the ratio would be meaningless")
