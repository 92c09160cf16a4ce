"""Normalized uncertainty of class-probability rows, each in [0, 1] (1 = the student cannot tell at all)."""

from __future__ import annotations

import numpy as np

MEASURES = ("margin", "entropy", "least-confidence")


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): the gap between the two likeliest classes, flipped."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """H(p) / log K."""
    k = probs.shape[1]
    if k < 2:
        return np.zeros(len(probs))
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(k)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """(1 - p1) scaled by K / (K - 1), so that a uniform row scores 1."""
    k = probs.shape[1]
    if k < 2:
        return np.zeros(len(probs))
    return (1.0 - probs.max(axis=1)) * k / (k - 1)


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    functions = {"margin": margin, "entropy": entropy, "least-confidence": least_confidence}
    if measure not in functions:
        raise ValueError(f"unknown uncertainty measure {measure!r}; use one of {MEASURES}")
    return np.clip(functions[measure](np.asarray(probs, dtype=np.float64)), 0.0, 1.0)
