"""Losses: ``loss, gy = nc.losses.cross_entropy(logits, labels)``; ``nc.losses.mse(pred, target)``.

Each returns the batch-mean loss as a Python float and the gradient with respect to the
prediction, an array of the prediction's dtype on the prediction's device: a NumPy array runs
the CPU kernels (``losses_cpu``), a ``numba.cuda`` device array the CUDA kernels
(``losses_cuda``, the same interface). The reductions follow PyTorch's defaults
(``CrossEntropyLoss()`` and ``MSELoss()``, ``reduction="mean"``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import numpy as np

from .device import array_device, get_backend, kernel_module

__all__ = ["cross_entropy", "cross_entropy_counted", "mse", "get", "LOSSES"]


def _device(pred: Any) -> tuple[Any, ModuleType]:
    """The backend and the loss kernels of the prediction's device."""
    device = array_device(pred)
    return get_backend(device), kernel_module("numbacnn.losses", device)


def _host(a: Any) -> np.ndarray:
    return get_backend("cuda").to_host(a) if array_device(a) == "cuda" else np.asarray(a)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_pred(name: str, pred: Any) -> None:
    if not (isinstance(pred, np.ndarray) or array_device(pred) == "cuda"):
        raise TypeError(f"{name}: expected a NumPy or CUDA device array, found {type(pred).__name__}")
    # Comparing dtypes first: a dtype's .name is built anew each time, a cost in every step.
    if pred.dtype not in _FLOATS and np.dtype(pred.dtype).name not in ("float32", "float64"):
        raise TypeError(f"{name}: expected float32 or float64 predictions, found {pred.dtype}")
    if len(pred.shape) < 1 or pred.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch, found shape {tuple(pred.shape)}")


_FEW_LABELS = 64


def _labels(labels: Any, n: int, k: int) -> np.ndarray:
    host = labels if type(labels) is np.ndarray else _host(labels)
    if host.ndim != 1 or host.shape[0] != n:
        raise ValueError(f"cross_entropy: expected {n} labels (shape ({n},)), found shape {host.shape}")
    if host.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers (class indices), found {host.dtype}")
    if n <= _FEW_LABELS:
        # A few labels: Python's min and max over a list (0.5 us at 10) beat a NumPy
        # reduction's fixed cost (1.3 us).
        values = host.tolist()
        fast = not values or (min(values) >= 0 and max(values) < k)
    else:
        # One pass for both bounds where it can: seen as unsigned, a negative label is huge.
        fast = host.dtype == np.int64 and host.view(np.uint64).max() < k
    if not fast and (host.min() < 0 or host.max() >= k):
        bad = host[(host < 0) | (host >= k)][0]
        raise ValueError(f"cross_entropy: label {int(bad)} is out of range for {k} classes (expected 0..{k - 1})")
    return np.ascontiguousarray(host, dtype=np.int64)


def cross_entropy(logits: Any, labels: Any) -> tuple[float, Any]:
    """Softmax + negative log-likelihood of integer ``labels``, averaged over the batch.

    ``logits`` is (N, K); returns ``(loss, gy)`` with ``gy = (softmax(logits) - onehot) / N``.
    Numerically stable for large logits (the row maximum is subtracted first).
    """
    loss, gy, _ = cross_entropy_counted(logits, labels, count=False)
    return loss, gy


def cross_entropy_counted(logits: Any, labels: Any, count: bool = True) -> tuple[float, Any, int]:
    """``cross_entropy`` plus how many rows predict their label (the first largest logit is
    the label's): accuracy without bringing the logits to the host (``count=False``: 0)."""
    _check_pred("cross_entropy", logits)
    if len(logits.shape) != 2:
        raise ValueError(f"cross_entropy: expected logits of shape (N, classes), found {tuple(logits.shape)}; "
                         f"put a flatten and a linear layer at the end of the model")
    n, k = logits.shape
    y = _labels(labels, n, k)
    backend, kernels = _device(logits)
    x = backend.to_device(logits)  # the logits themselves when already contiguous there
    # rows and lse are read back (or not at all) before the call returns: kept between calls.
    rows = backend.reusable("cross_entropy.rows", (2, n), x.dtype)
    lse = backend.reusable("cross_entropy.lse", (n,), x.dtype)
    gx = backend.new(x.shape, x.dtype)
    kernels.cross_entropy_forward_backward(x, backend.upload("cross_entropy.labels", y), rows, lse, gx)
    host = rows if isinstance(rows, np.ndarray) else backend.to_host(rows) if count else backend.to_host(rows[0])[None]
    hits = int(host[1].sum()) if count else 0
    return float(host[0].sum(dtype=np.float64) / n), gx, hits


def _mse_target(pred: Any, target: Any, backend: Any) -> Any:
    """The target as an array of the prediction's dtype, on the prediction's device.

    A floating target of another dtype is refused: float32 and float64 are never silently
    mixed (PyTorch would compute in the wider one; numbacnn would have to round one of them).
    Integer and boolean targets are converted, as PyTorch promotes them.
    """
    if array_device(target) == "cpu":
        target = np.asarray(target)
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"mse: target shape {tuple(target.shape)} differs from prediction shape {tuple(pred.shape)}")
    have, want = np.dtype(target.dtype), np.dtype(pred.dtype)
    if np.issubdtype(have, np.floating) and have != want:
        raise TypeError(f"mse: the target is {have.name} but the prediction is {want.name}; float dtypes are "
                        f"never mixed: convert the target (target.astype(np.{want.name}))")
    if not (np.issubdtype(have, np.floating) or np.issubdtype(have, np.integer) or have == np.bool_):
        raise TypeError(f"mse: expected a numeric target, found {have}")
    if array_device(target) == array_device(pred) and have == want:
        return backend.to_device(target)
    return backend.to_device(np.ascontiguousarray(_host(target), dtype=want))


def mse(pred: Any, target: Any) -> tuple[float, Any]:
    """Mean squared error over every element (PyTorch's ``MSELoss()``); ``gy = 2 (pred - target) / pred.size``.

    ``target`` has the prediction's shape and float dtype (another float dtype is a
    ``TypeError``; integer or boolean targets are converted to the prediction's dtype).
    """
    _check_pred("mse", pred)
    backend, kernels = _device(pred)
    t = _mse_target(pred, target, backend)
    n = pred.shape[0]
    flat = (n, int(np.prod(pred.shape[1:], dtype=np.int64)))
    x = backend.to_device(pred).reshape(flat)
    rows, gx = backend.reusable("mse.rows", (n,), x.dtype), backend.new(flat, x.dtype)
    kernels.mse_forward_backward(x, t.reshape(flat), rows, gx)
    return float(backend.to_host(rows).sum(dtype=np.float64) / pred.size), gx.reshape(pred.shape)


LOSSES: dict[str, Callable[[Any, Any], tuple[float, Any]]] = {"cross_entropy": cross_entropy, "mse": mse}


def get(loss: str | Callable[[Any, Any], tuple[float, Any]]) -> Callable[[Any, Any], tuple[float, Any]]:
    """A loss function by name (``"cross_entropy"``, ``"mse"``), or ``loss`` itself if callable."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)} or a function "
                         f"(pred, target) -> (loss, gradient)")
    return LOSSES[loss]
