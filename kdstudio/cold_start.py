"""A cold start for people: the pool documents nobody has labelled, in the order a selector that reads vectors only
(diversity) picks them, so that the first labels a person gives cover the corpus instead of one corner of it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from kdstudio.errors import KdError
from kdstudio.interfaces import Selector, TeacherAnswers


class VectorsOnly:
    """A SelectionContext with vectors and no student or teacher: enough for diversity and typicality selectors."""

    round = 0
    has_student = False

    def __init__(self, pool: np.ndarray, labelled: np.ndarray, labels: list[str], seed: int) -> None:
        self.pool, self.labelled, self.labels = pool, labelled, labels
        self.n_pool, self.n_classes = len(pool), len(labels)
        self.rng = np.random.default_rng(seed)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        return self.pool[positions]

    def labelled_vectors(self) -> np.ndarray:
        return self.labelled

    def score(self, positions: np.ndarray) -> np.ndarray:
        raise KdError("a cold start has no student to score with", "pick a selector that reads vectors only")

    def score_stream(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise KdError("a cold start has no student to score with", "pick a selector that reads vectors only")

    def stream_pool(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise KdError("a cold start has no student to score with", "pick a selector that reads vectors only")

    def top_uncertain(self, measure: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise KdError("a cold start has no student to score with", "pick a selector that reads vectors only")

    def teacher_answers(self) -> TeacherAnswers:
        raise KdError("a cold start has no teacher answers", "pick a selector that reads vectors only")


def diverse_order(selector: Selector, pool: np.ndarray, labelled: np.ndarray, labels: list[str], k: int,
                  seed: int = 0) -> list[int]:
    """Positions of `k` pool rows as `selector` picks them, away from what people have labelled already."""
    if not len(pool):
        return []
    picked = selector.select(VectorsOnly(pool, labelled, labels, seed), min(k, len(pool)))  # type: ignore[arg-type]
    return [int(p) for p in picked.positions]
