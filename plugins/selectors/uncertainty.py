from __future__ import annotations

from kdstudio.interfaces import Selection, SelectionContext, Selector


def random_selection(context: SelectionContext, k: int, info: str = "random") -> Selection:
    k = min(k, context.n_pool)
    positions = context.rng.choice(context.n_pool, size=k, replace=False)
    return Selection(positions.tolist(), [float("nan")] * k, 0, {"strategy": info})


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
        best, u = context.top_uncertain(self.measure, k)
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
