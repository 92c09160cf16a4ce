from __future__ import annotations

import numpy as np

from kdstudio.interfaces import Selection, SelectionContext, Selector
from kdstudio.uncertainty import uncertainty


def random_selection(context: SelectionContext, k: int, info: str = "random") -> Selection:
    k = min(k, context.n_pool)
    positions = context.rng.choice(context.n_pool, size=k, replace=False)
    return Selection(positions.tolist(), [float("nan")] * k, 0, {"strategy": info})


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the k highest scores, ties broken at random (argpartition, not a full sort)."""
    k = min(k, len(scores))
    jitter = rng.random(len(scores)) * 1e-9
    keyed = scores + jitter
    best = np.argpartition(-keyed, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return best[np.argsort(-keyed[best])]


class RandomSelector(Selector):
    """Uniform random sampling from the pool: the baseline every strategy is measured against."""

    name = "random"

    def select(self, context: SelectionContext, k: int) -> Selection:
        return random_selection(context, k)


class _WholePoolUncertainty(Selector):
    measure = ""

    def select(self, context: SelectionContext, k: int) -> Selection:
        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        positions = np.arange(context.n_pool)
        u = uncertainty(context.score(positions), self.measure)
        best = top_k(u, k, context.rng)
        return Selection(best.tolist(), u[best].tolist(), context.n_pool, {"strategy": self.measure})


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
