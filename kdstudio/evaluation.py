"""Metrics of a student's probabilities against reference labels (teacher labels on val, gold on test)."""

from __future__ import annotations

from typing import Any

import numpy as np


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def evaluate(y: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """accuracy, macro/weighted F1, log loss, ECE and a per-class report; `y` holds class indices."""
    # Imported here: scikit-learn costs a second at start-up, and `kdstudio --help` must not pay it.
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

    if len(y) == 0:
        return {"n": 0}
    k = len(labels)
    predicted = probs.argmax(axis=1)
    classes = list(range(k))
    clipped = np.clip(probs, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=classes, zero_division=0)
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, predicted, labels=classes, average="weighted", zero_division=0)),
        "log_loss": float(log_loss(y, clipped, labels=classes)),
        "ece": expected_calibration_error(y, probs),
        "per_class": {
            labels[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])}
            for i in classes
        },
    }
