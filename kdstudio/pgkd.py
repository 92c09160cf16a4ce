"""PGKD (performance-guided knowledge distillation): what the teacher is shown to write new samples aimed at
the student's weaknesses. Teacher-agnostic: the teacher turns this request into its own prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdstudio.interfaces import GenerationRequest


@dataclass(frozen=True)
class PgkdSettings:
    samples: int = 32  # new samples per step (the paper's 32)
    shots: int = 16  # few-shot, correct, misclassified and hard-negative samples each (the paper's 16)
    report: bool = True  # ablation switch: the per-class validation report in the prompt
    hard_negatives: bool = True  # ablation switch: hard negatives in the prompt


def _pick(rng: np.random.Generator, positions: np.ndarray, k: int) -> list[int]:
    if len(positions) <= k:
        return [int(p) for p in positions]
    return sorted(int(p) for p in rng.choice(positions, size=k, replace=False))


def generation_request(probs: np.ndarray, y: np.ndarray, texts: list[str], labels: list[str],
                       val_per_class: dict[str, dict[str, Any]] | None, settings: PgkdSettings,
                       rng: np.random.Generator) -> GenerationRequest:
    """From the student's probabilities on its own training samples (`y` their labels, as class indices):
    correct ones, misclassified ones, and hard negatives (misclassified with the highest confidence)."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    right = np.flatnonzero(predicted == y)
    wrong = np.flatnonzero(predicted != y)
    hard: list[int] = []
    if settings.hard_negatives and len(wrong):
        hard = [int(p) for p in wrong[np.argsort(-confidence[wrong], kind="stable")][:settings.shots]]
    rest = np.array([p for p in wrong if p not in set(hard)], dtype=int)
    report = None
    if settings.report and val_per_class:
        # Metrics only: never a validation sample.
        report = {x: {m: float(val_per_class[x].get(m, 0.0)) for m in ("precision", "recall", "f1")}
                  for x in labels if x in val_per_class}
    return GenerationRequest(
        n=settings.samples,
        few_shot=[(texts[p], labels[y[p]]) for p in _pick(rng, np.arange(len(y)), settings.shots)],
        correct=[(texts[p], labels[y[p]]) for p in _pick(rng, right, settings.shots)],
        misclassified=[(texts[p], labels[y[p]], labels[predicted[p]]) for p in _pick(rng, rest, settings.shots)],
        hard_negatives=[(texts[p], labels[y[p]], labels[predicted[p]]) for p in hard],
        report=report,
    )
