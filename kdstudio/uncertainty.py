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


# Splitmix64's constants: a cheap, well-mixed hash of a 64-bit integer, vectorized.
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
# Below any difference between two scores that are not equal, so the jitter orders ties only.
JITTER = 1e-9


def tie_jitter(salt: int, keys: np.ndarray) -> np.ndarray:
    """A number in [0, JITTER) for each key (an integer that names a document, such as its vector's row), the same
    wherever it is computed: in this process, a chunk at a time, or on an engine's workers, a shard at a time. A
    new `salt` each selection breaks ties at random, and the order in which the pool is read changes nothing."""
    with np.errstate(over="ignore"):
        x = np.asarray(keys).astype(np.uint64) * _GOLDEN + np.uint64(salt % 2**64)
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (JITTER / 2**53)


class TopUncertain:
    """The k most uncertain of a stream of scored chunks, holding only k of them (and the chunk being added). Merging
    the top k of each part of a pool gives the pool's top k: what an engine's workers return instead of scores."""

    def __init__(self, k: int, salt: int) -> None:
        self.k, self.salt = k, salt
        self.keys = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)
        self.keyed = np.zeros(0)

    def add(self, keys: np.ndarray, scores: np.ndarray, tie_keys: np.ndarray) -> None:
        """`keys` name the candidates as the caller wants them back; `tie_keys` name the documents (see tie_jitter)."""
        self.add_keyed(keys, scores, scores + tie_jitter(self.salt, tie_keys))

    def add_keyed(self, keys: np.ndarray, scores: np.ndarray, keyed: np.ndarray) -> None:
        self.keys = np.concatenate([self.keys, np.asarray(keys, dtype=np.int64)])
        self.scores = np.concatenate([self.scores, scores])
        self.keyed = np.concatenate([self.keyed, keyed])
        if len(self.keyed) > self.k:
            keep = np.argpartition(-self.keyed, self.k - 1)[:self.k] if self.k > 0 else np.zeros(0, dtype=np.int64)
            self.keys, self.scores, self.keyed = self.keys[keep], self.scores[keep], self.keyed[keep]

    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, scores, scores with their jitter), most uncertain first."""
        order = np.argsort(-self.keyed, kind="stable")
        return self.keys[order], self.scores[order], self.keyed[order]
