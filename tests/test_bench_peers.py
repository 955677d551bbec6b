"""bench/_peers.LayerRun drives a layer as the executor does: ``forward()`` as inference (nothing
kept for a backward, as PyTorch's peer runs under ``inference_mode``), ``step()`` as training with
the backward to come."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

import numbacnn as nc

PEERS = Path(__file__).resolve().parents[1] / "bench" / "_peers.py"


def _peers() -> Any:
    spec = importlib.util.spec_from_file_location("bench_peers", PEERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Modes(nc.Layer):
    """The identity, noting (training, backward expected) of each forward."""

    name = "test_bench_peers_modes"
    kernels = None

    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool]] = []

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return x_shape

    def forward_cpu(self, ctx: nc.Ctx, x: Any) -> Any:
        self.modes.append((ctx.training, ctx.backward_expected))
        return x.copy()

    def backward_cpu(self, ctx: nc.Ctx, gy: Any) -> Any:
        return gy.copy()


def test_forward_is_inference_and_step_is_training():
    layer = Modes()
    x = np.ones((2, 3), np.float32)
    run = _peers().LayerRun(layer, x, {}, x)
    run.forward()
    run.step()
    assert layer.modes == [(False, False), (True, True)]
