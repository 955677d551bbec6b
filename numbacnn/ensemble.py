"""Ensembles: combine the predictions of several trained classifiers.

network3 reached 99.67% on MNIST with a vote of five nets; ``Ensemble(models, "vote")`` does
the same, ``"average"`` averages their softmax probabilities instead.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .model import Model
from .train import Trainer

__all__ = ["Ensemble"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Ensemble:
    """``Ensemble(models, method="average" | "vote")``; models may be ``Model`` objects or saved files.

    ``"vote"`` picks each sample's most frequent predicted class, ties going to the class with
    the higher average probability.
    """

    def __init__(self, models: Sequence[Model | str | os.PathLike], method: str = "average") -> None:
        if method not in ("average", "vote"):
            raise ValueError(f"Ensemble: method must be 'average' or 'vote', found {method!r}")
        self.models = [m if isinstance(m, Model) else Model.load(m) for m in models]
        if not self.models:
            raise ValueError("Ensemble: needs at least one model")
        first = self.models[0]
        for i, m in enumerate(self.models[1:], start=1):
            if m.input_shapes != first.input_shapes or m.output_shape != first.output_shape:
                raise ValueError(f"Ensemble: model {i} maps {m.input_shapes[0]} -> {m.output_shape}, "
                                 f"model 0 maps {first.input_shapes[0]} -> {first.output_shape}")
        self.method = method

    def _probs(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.stack([_softmax(Trainer(m).predict(x, batch_size)) for m in self.models])

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The members' softmax probabilities, averaged: (N, classes)."""
        return self._probs(x, batch_size).mean(axis=0)

    def _predict(self, probs: np.ndarray) -> np.ndarray:
        mean = probs.mean(axis=0)
        if self.method == "average":
            return mean.argmax(axis=1).astype(np.int64)
        votes = np.zeros_like(mean)
        for p in probs:
            votes[np.arange(len(p)), p.argmax(axis=1)] += 1
        # Probabilities sum to 1, so half of one breaks ties without overturning a vote.
        return (votes + 0.5 * mean).argmax(axis=1).astype(np.int64)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predicted class per sample (int64)."""
        return self._predict(self._probs(x, batch_size))

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, Any]:
        """``{"accuracy", "loss"}``: the loss is the NLL of the averaged probabilities."""
        probs = self._probs(x, batch_size)
        mean = probs.mean(axis=0)
        loss = float(-np.log(np.maximum(mean[np.arange(len(y)), y], 1e-300)).mean())
        return {"loss": loss, "accuracy": float((self._predict(probs) == y).mean())}
