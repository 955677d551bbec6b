"""Optimizers (``SGD``, ``Adam``, ``AdamW``) and learning-rate schedules.

An optimizer updates ``model.params`` in place with Numba kernels on the model's device, from
the gradients in ``model.grads``; the update rules are PyTorch's optimizers of the same name.
Its state (momentum buffers, moment estimates) lives on the model's device and follows the
model when it moves. ``state_dict()`` gives host arrays for a checkpoint.

Schedules change ``optimizer.lr`` once per epoch (call ``schedule.step()`` at the end of
each epoch, as the Trainer does): ``StepLR``, ``CosineAnnealingLR``, and a linear warm-up
that any schedule takes as ``warmup=epochs``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._flat import FlatTable
from .device import get_backend, kernel_module

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRSchedule", "ConstantLR", "StepLR", "CosineAnnealingLR"]


class Optimizer:
    """Base class: holds the model, the learning rate, the step count and per-parameter state."""

    def __init__(self, model: Any, lr: float) -> None:
        if not hasattr(model, "params") or not hasattr(model, "grads"):
            raise TypeError(f"{type(self).__name__}() expects a numbacnn.Model, found {type(model).__name__}")
        _check(type(self).__name__, "lr", lr)
        self.model = model
        self.lr = float(lr)
        self.steps = 0
        self.state: dict[str, dict[str, Any]] = {}  # per parameter: views into the flat arrays
        self._flat: dict[str, Any] = {}  # per state name: one flat array, the model's layout
        self._device = model.device

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments except the model (JSON-able; checkpoints record them)."""
        return {"lr": self.lr}

    def zero_grad(self) -> None:
        """Clear the model's gradients (backward adds into them)."""
        self.model.zero_grad()

    def step(self) -> None:
        """Update every parameter from its gradient, in place: one kernel call over the model's
        flat parameter array (every ``model.params`` value is a view into it)."""
        self._follow_model()
        self.steps += 1
        p, g = self.model.params, self.model.grads
        if type(p) is not FlatTable or type(g) is not FlatTable:
            raise TypeError(f"{type(self).__name__}.step: model.params and model.grads must be the model's own "
                            f"tables (found {type(p).__name__} and {type(g).__name__}); write new values into "
                            f"them (model.params[key] = array copies into the parameter) instead of replacing them")
        if p.layout.size:
            self._update(kernel_module("numbacnn.optim", self.model.device), p.flat, g.flat)

    def _update(self, kernels: Any, p: Any, g: Any) -> None:
        """Update the flat parameters ``p`` from the flat gradients ``g``."""
        raise NotImplementedError

    def _buffer(self, name: str) -> tuple[Any, bool]:
        """The flat state array ``name`` (zeros on first use) and whether it is new; every
        parameter's ``state[key][name]`` is a view into it."""
        if name in self._flat:
            return self._flat[name], False
        backend = get_backend(self.model.device)
        buf = backend.new((self.model.params.layout.size,), self.model.dtype)
        backend.fill_zero(buf)
        self._adopt(name, buf)
        return buf, True

    def _adopt(self, name: str, flat: Any) -> None:
        self._flat[name] = flat
        for key, view in self.model.params.layout.views(flat).items():
            self.state.setdefault(key, {})[name] = view

    def _follow_model(self) -> None:
        if self.model.device == self._device:
            return
        old, new = get_backend(self._device), get_backend(self.model.device)
        for name, flat in list(self._flat.items()):
            host = old.to_host(flat)
            self._adopt(name, new.to_device(host) if self.model.device != "cpu" else host)
        self._device = self.model.device

    def _scalars(self, p: Any, *values: float) -> list[Any]:
        t = np.dtype(p.dtype).type
        return [t(v) for v in values]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host arrays: ``"steps"``, ``"lr"`` and ``"state/<param>/<name>"`` (for checkpoints)."""
        host = get_backend(self._device).to_host
        out = {"kind": np.frombuffer(type(self).__name__.encode(), np.uint8),
               "steps": np.array(self.steps, np.int64), "lr": np.array(self.lr, np.float64)}
        for key, slot in self.state.items():
            for name, a in slot.items():
                out[f"state/{key}/{name}"] = host(a)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` gave (onto the model's current device)."""
        kind = bytes(np.asarray(state.get("kind", np.zeros(0, np.uint8)), np.uint8)).decode()
        if kind != type(self).__name__:
            raise ValueError(f"optimizer state is for {kind or 'an unknown optimizer'}, "
                             f"not {type(self).__name__}")
        layout = self.model.params.layout
        given: dict[str, dict[str, np.ndarray]] = {}
        for k, v in state.items():
            if not k.startswith("state/"):
                continue
            key, _, name = k[len("state/"):].rpartition("/")
            if key not in layout.spans or tuple(np.shape(v)) != layout.spans[key][2]:
                raise ValueError(f"optimizer state '{key}/{name}' does not fit the model's parameters")
            given.setdefault(name, {})[key] = np.asarray(v)
        flats = {}
        for name, arrays in given.items():
            missing = [key for key in layout.spans if key not in arrays]
            if missing:
                raise ValueError(f"optimizer state '{name}' has no entry for parameter(s) {', '.join(missing)}; "
                                 f"expected one per parameter, as state_dict() writes")
            host = np.empty(layout.size, self.model.dtype)
            for key, (a, b, _) in layout.spans.items():
                host[a:b] = arrays[key].reshape(b - a)
            flats[name] = get_backend(self.model.device).to_device(host)
        self.state, self._flat = {}, {}
        for name, flat in flats.items():
            self._adopt(name, flat)
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])
        self._device = self.model.device


def _check(owner: str, name: str, value: float, upper: float | None = None) -> None:
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0 or (upper is not None and value >= upper):
        bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
        raise ValueError(f"{owner}: {name} must be a number {bound}, found {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    As ``torch.optim.SGD`` (dampening 0): ``d = g + wd p``; with momentum ``buf = m buf + d``
    (``buf = d`` on the first step) and ``d = buf`` (or ``d + m buf`` for Nesterov); ``p -= lr d``.
    """

    def __init__(self, model: Any, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        _check("SGD", "momentum", momentum)
        _check("SGD", "weight_decay", weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    @property
    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, kernels: Any, p: Any, g: Any) -> None:
        if self.momentum:
            buf, first = self._buffer("momentum_buffer")
        else:
            buf, first = p[:0], False
        lr, m, wd = self._scalars(p, self.lr, self.momentum, self.weight_decay)
        kernels.sgd_update(p, g, buf, lr, m, wd, self.nesterov, first)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``, amsgrad off); ``weight_decay`` is L2 added to the gradient."""

    decoupled = False

    def __init__(self, model: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        name = type(self).__name__
        if len(betas) != 2:
            raise ValueError(f"{name}: betas must be two numbers, found {betas!r}")
        _check(name, "betas[0]", betas[0], 1.0)
        _check(name, "betas[1]", betas[1], 1.0)
        _check(name, "eps", eps)
        _check(name, "weight_decay", weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    @property
    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, kernels: Any, p: Any, g: Any) -> None:
        m, _ = self._buffer("exp_avg")
        v, _ = self._buffer("exp_avg_sq")
        b1, b2 = self.betas
        step_size = self.lr / (1.0 - b1 ** self.steps)
        bc2_sqrt = math.sqrt(1.0 - b2 ** self.steps)
        l2, decay = (0.0, 1.0 - self.lr * self.weight_decay) if self.decoupled else (self.weight_decay, 1.0)
        kernels.adam_update(p, g, m, v,
                            *self._scalars(p, step_size, b1, b2, bc2_sqrt, self.eps, l2, decay))


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): ``p *= 1 - lr wd`` each step."""

    decoupled = True

    def __init__(self, model: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(model, lr, betas, eps, weight_decay)


class LRSchedule:
    """Sets ``optimizer.lr = base_lr * factor(epoch)``; ``step()`` moves to the next epoch.

    ``warmup=w`` ramps the rate linearly over the first ``w`` epochs (``(e + 1) / (w + 1)`` of
    the scheduled rate at epoch ``e``); the schedule itself counts epochs from the end of it.
    """

    def __init__(self, optimizer: Optimizer, warmup: int = 0) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}() expects an optimizer, found {type(optimizer).__name__}")
        if int(warmup) != warmup or warmup < 0:
            raise ValueError(f"{type(self).__name__}: warmup must be a whole number of epochs >= 0, found {warmup!r}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.warmup = int(warmup)
        self.epoch = 0
        optimizer.lr = self.lr_at(0)

    def factor(self, epoch: int) -> float:
        """The multiplier of the base rate ``epoch`` epochs after the warm-up."""
        return 1.0

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.base_lr * self.factor(0) * (epoch + 1) / (self.warmup + 1)
        return self.base_lr * self.factor(epoch - self.warmup)

    def step(self) -> None:
        """End of an epoch: set the rate for the next one."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"epoch": np.array(self.epoch, np.int64), "base_lr": np.array(self.base_lr, np.float64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.epoch = int(state["epoch"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.epoch)


class ConstantLR(LRSchedule):
    """The base rate throughout (after an optional warm-up)."""


class StepLR(LRSchedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, warmup: int = 0) -> None:
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a whole number of epochs >= 1, found {step_size!r}")
        _check("StepLR", "gamma", gamma)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, warmup)

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRSchedule):
    """Cosine from the base rate down to ``eta_min`` over ``T_max`` epochs (PyTorch's closed form)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, warmup: int = 0) -> None:
        if int(T_max) != T_max or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a whole number of epochs >= 1, found {T_max!r}")
        _check("CosineAnnealingLR", "eta_min", eta_min)
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, warmup)

    def factor(self, epoch: int) -> float:
        e = min(epoch, self.T_max)
        ratio = self.eta_min / self.base_lr if self.base_lr else 0.0
        return ratio + (1.0 - ratio) * (1.0 + math.cos(math.pi * e / self.T_max)) / 2.0
