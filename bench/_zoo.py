"""The whole-model workloads shared by the timed rows (test_models.py) and the memory
children (_memory_child.py): which zoo models, at which batches, on which data."""

from __future__ import annotations

import numpy as np

import numbacnn as nc

MODELS = ["lenet5", "network3", "vgg_small", "googlenet_mini", "resnet_bottleneck"]
TRAIN_BATCH = 32
INFER_BATCHES = [1, 32, 256]
MEMORY_INFER_BATCH = 256
NUM_CLASSES = 10


def build(name: str) -> nc.Model:
    """The zoo model at its default configuration and seed 0: every engine's weights."""
    return nc.zoo.build(name, seed=0)


def data(model: nc.Model, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 batch of the model's input shape and integer class labels."""
    rng = np.random.default_rng(seed)
    shape = model.shapes[model.graph.inputs[0]]
    return rng.standard_normal((batch, *shape), dtype=np.float32), rng.integers(0, NUM_CLASSES, batch)


def workload(model: nc.Model, batch: int) -> str:
    """The workload label, e.g. ``3x32x32 N256`` (test_network3's format)."""
    return "x".join(str(s) for s in model.shapes[model.graph.inputs[0]]) + f" N{batch}"
