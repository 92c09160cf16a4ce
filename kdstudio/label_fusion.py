"""Fused labels: each teacher label made into a belief over the classes, the teacher's probabilities (calibrated on
the labels the run trusts) times what a student that never saw the label believes (its out-of-fold probabilities).

Where the teacher is sure and right, the fused label is its label. Where it hesitates, the student's view of the
document's neighbourhood and the teacher's own second choice decide, so a wrong label counts partly for the class it
should have been. The teacher's probabilities are calibrated by one temperature fitted on the documents where its
answer can be compared with people's or gold labels: a teacher that claims 0.9 and is right 0.6 of the time is
believed as 0.6. How much this buys depends on how often a real teacher's second choice is right (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Probabilities are floored before logs and products: a teacher's 0 or a student's 0 never vetoes a class outright.
FLOOR = 1e-3
# The teacher is calibrated only from this many answers it gave on trusted documents; below, its probabilities stand.
MIN_CALIBRATION = 10
# Temperatures tried (a grid, so that the fit is the same on every machine): 1/4 sharper to 8 times flatter.
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 41))


def teacher_belief(label: Any, labels: Sequence[str], label_index: Mapping[str, int]) -> np.ndarray:
    """A teacher answer as a distribution over the classes: its probabilities where it gave them, else its confidence
    on its label and the rest spread evenly (an answer without a confidence counts as sure)."""
    if label.probs:
        row = np.array([float(label.probs.get(x, 0.0)) for x in labels])
        if row.sum() > 0:
            return row / row.sum()
    confidence = 1.0 if label.confidence is None else float(label.confidence)
    row = np.full(len(labels), (1.0 - confidence) / max(len(labels) - 1, 1))
    row[label_index[label.label]] = confidence
    return row / row.sum()


def tempered(beliefs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.maximum(beliefs, FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def calibration_temperature(beliefs: np.ndarray, truth: np.ndarray) -> float:
    """The temperature under which the teacher's beliefs best predict the trusted labels (least log loss); 1 where
    there are too few of them to say."""
    if len(truth) < MIN_CALIBRATION:
        return 1.0
    losses = [-np.log(np.maximum(tempered(beliefs, t)[np.arange(len(truth)), truth], 1e-12)).mean()
              for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def fuse(teacher: np.ndarray, student_oof: np.ndarray, temperature: float) -> np.ndarray:
    """Per label, the normalized product of the tempered teacher belief and the student's out-of-fold belief."""
    product = tempered(teacher, temperature) * np.maximum(student_oof, FLOOR)
    return product / product.sum(axis=1, keepdims=True)
