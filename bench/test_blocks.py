"""Blocks, forward + backward (input gradient included, as inside a deeper net), training mode:

- ResNet v1.5 bottleneck 256-64-256, identity shortcut, 16x16, batch 32;
- ResNet v1.5 bottleneck 256-128-512, stride 2, projection shortcut, 16x16, batch 32;
- GoogLeNet Inception 3a on (8, 192, 28, 28).

numbacnn builds them with ``nc.blocks`` and runs them through ``Model``; PyTorch runs their
twins (``_twin.torch_twin``: the same graph, numbacnn's weights copied in). Batch norm uses
batch statistics (training mode) in both. The warm-up call outside the timer compiles and checks that the outputs agree.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from _peers import SMOKE_BATCH, block_step, bottleneck_model, check_same, inception_model, torch_block_step
from _twin import torch_twin

# name: (kind, batch, in channels, H=W, builder args)
BLOCKS = {
    "bottleneck 256-64-256 16x16": ("bottleneck", 32, 256, 16, (64, 256, 1)),
    "bottleneck 256-128-512 s2 16x16": ("bottleneck", 32, 256, 16, (128, 512, 2)),
    "inception3a 192x28x28": ("inception", 8, 192, 28, ()),
}


def _case(name: str, peer: str, batch: int) -> tuple[Callable[[], Any], Any, int]:
    kind, _, cin, hw, args = BLOCKS[name]
    model = bottleneck_model(cin, *args, hw) if kind == "bottleneck" else inception_model(cin, hw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, hw, hw), dtype=np.float32)
    gy = rng.standard_normal((batch, *model.output_shape), dtype=np.float32)
    flops = 3 * model.flops() * batch
    if peer == "numbacnn":
        return block_step(model, x, gy), model, flops
    pytest.importorskip("torch")
    return torch_block_step(torch_twin(model), x, gy), model, flops


@pytest.mark.parametrize("peer", ["numbacnn", "torch"])
@pytest.mark.parametrize("name", list(BLOCKS), ids=lambda n: f"N{BLOCKS[n][1]}-{n.replace(' ', '-')}")
def test_block_forward_backward_cpu(benchmark: Any, record: Any, smoke: bool, name: str, peer: str) -> None:
    batch = BLOCKS[name][1]
    run_batch = min(batch, SMOKE_BATCH) if smoke else batch
    step, model, flops = _case(name, peer, run_batch)
    y, gx = step()
    if peer == "torch":
        want_y, want_gx = _case(name, "numbacnn", run_batch)[0]()
        check_same(f"{name} output", y, want_y)
        check_same(f"{name} input gradient", gx, want_gx, l2=1e-2)
    record("block forward+backward", "cpu", f"{name} N{batch}", peer, run_batch, flops)
    benchmark(step)
