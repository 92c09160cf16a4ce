from __future__ import annotations

import numpy as np

from kdstudio.interfaces import Selection, SelectionContext, Selector
from kdstudio.uncertainty import uncertainty


def random_selection(context: SelectionContext, k: int, info: str = "random") -> Selection:
    k = min(k, context.n_pool)
    positions = context.rng.choice(context.n_pool, size=k, replace=False)
    return Selection(positions.tolist(), [float("nan")] * k, 0, {"strategy": info})


class RandomSelector(Selector):
    """Uniform random sampling from the pool: the baseline every strategy is measured against."""

    name = "random"

    def select(self, context: SelectionContext, k: int) -> Selection:
        return random_selection(context, k)


def streamed_top_k(context: SelectionContext, measure: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most uncertain pool positions, most uncertain first, and their uncertainty, computed a chunk at a time
    while holding only the best k. Ties are broken at random by a tiny jitter, drawn chunk by chunk from the run's
    generator: the same numbers one draw over the whole pool gives, so the picks are those of ranking the whole pool
    at once (tests/test_streaming_pool.py)."""
    keyed = np.zeros(0)
    positions = np.zeros(0, dtype=np.int64)
    scores = np.zeros(0)
    for chunk, probs in context.stream_pool():
        u = uncertainty(probs, measure)
        keyed = np.concatenate([keyed, u + context.rng.random(len(u)) * 1e-9])
        positions = np.concatenate([positions, chunk])
        scores = np.concatenate([scores, u])
        if len(keyed) > k:
            keep = np.argpartition(-keyed, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
            keyed, positions, scores = keyed[keep], positions[keep], scores[keep]
    order = np.argsort(-keyed)
    return positions[order], scores[order]


class _WholePoolUncertainty(Selector):
    measure = ""

    def select(self, context: SelectionContext, k: int) -> Selection:
        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        best, u = streamed_top_k(context, self.measure, min(k, context.n_pool))
        return Selection(best.tolist(), u.tolist(), context.n_pool, {"strategy": self.measure})


class LeastConfidenceSelector(_WholePoolUncertainty):
    """Scores the whole pool; picks the documents whose top class is least probable."""

    name = "least-confidence"
    measure = "least-confidence"


class MarginSelector(_WholePoolUncertainty):
    """Scores the whole pool; picks the smallest gaps between the two likeliest classes."""

    name = "margin"
    measure = "margin"


class EntropySelector(_WholePoolUncertainty):
    """Scores the whole pool; picks the documents with the highest predictive entropy."""

    name = "entropy"
    measure = "entropy"
