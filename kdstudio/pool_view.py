"""The selector's view of the unlabelled pool (kdstudio.interfaces.SelectionContext)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from kdstudio.errors import KdError
from kdstudio.free_rows import FreeRows
from kdstudio.interfaces import Student, TeacherAnswers
from kdstudio.scale import PoolScorer, features_table
from kdstudio.uncertainty import TopUncertain, uncertainty

# Pool positions scored at once: what a streaming selector holds besides its top candidates.
CHUNK = 65536


def chunked(positions: np.ndarray) -> Iterator[np.ndarray]:
    """Positions CHUNK at a time: what bounds the memory of scoring many."""
    return (positions[start:start + CHUNK] for start in range(0, len(positions), CHUNK))


class PoolView:
    """The selector's view of the unlabelled pool. Position p is `keys[p]`: a document id, or (in a run) the
    document's row in the run's index, which `features`, `vectors` (of positions' keys), `vectors_of` (of ids) and
    `ids_of` (keys to ids) read. With a `scorer` (an engine), scoring runs on the engine's workers: a ranking of the
    whole pool as one shard job that returns candidates, anything else as a stream of chunks. Keys are sorted.

    In a run the keys are rows of the vector shards, and `excluded` lists the pool's rows that are not in the view
    (bought, labelled by people): a document's shard row breaks its ties in a ranking the same way here and on an
    engine's workers, and names the candidates the workers return."""

    def __init__(self, keys: np.ndarray | FreeRows, features: Callable[[np.ndarray], Any],
                 vectors: Callable[[np.ndarray], np.ndarray], labelled: list[str], student: Student | None,
                 labels: list[str], round: int, rng: np.random.Generator, scorer: PoolScorer | None = None,
                 answers: dict[str, tuple[str, float | None]] | None = None, *,
                 vectors_of: Callable[[list[str]], np.ndarray] | None = None,
                 ids_of: Callable[[np.ndarray], list[str]] | None = None,
                 excluded: np.ndarray | None = None) -> None:
        self.keys = keys
        self.n_pool = len(keys)
        self.n_classes = len(labels)
        self.labels = labels
        self.round = round
        self.rng = rng
        self.has_student = student is not None
        self.scored = 0
        self._features = features
        self._vectors = vectors
        self._vectors_of = vectors_of or vectors
        self._ids_of = ids_of or (lambda keys: keys.tolist())
        self._labelled = labelled
        self._student = student
        self._scorer = scorer
        self._answers = answers or {}
        self._excluded = excluded

    def _require_student(self) -> Student:
        if self._student is None:
            raise KdError("no student to score with yet")
        return self._student

    def score(self, positions: np.ndarray) -> np.ndarray:
        self._require_student()
        out = [probs for _, probs in self.score_stream(chunked(np.asarray(positions)))]
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))

    def stream_pool(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Each chunk's positions made as it is scored: np.arange(n_pool) would be 160 MB at 20M documents.
        yield from self.score_stream(np.arange(start, min(start + CHUNK, self.n_pool))
                                     for start in range(0, self.n_pool, CHUNK))

    def top_uncertain(self, measure: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        student = self._require_student()
        salt = int(self.rng.integers(2**63))
        k = min(k, self.n_pool)
        if self._scorer is not None and self._excluded is not None and self.n_pool:
            self.scored += self.n_pool
            keys, scores = self._scorer.top_uncertain(student, self.round, measure, k, salt, self._excluded)
            positions = self.keys.searchsorted(keys)
            if len(keys) and not np.array_equal(self.keys[np.minimum(positions, self.n_pool - 1)], keys):
                raise KdError("the engine returned documents that are not in the pool", "run the command again")
            return positions, scores
        best = TopUncertain(k, salt)
        for positions, probs in self.stream_pool():
            keys = self.keys[positions]
            best.add(positions, uncertainty(probs, measure), keys if self._excluded is not None else positions)
        positions, scores, _ = best.best()
        return positions, scores

    def score_stream(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        student = self._require_student()
        if self._scorer is None:
            for positions in chunks:
                self.scored += len(positions)
                yield positions, student.predict_proba(self._features(self.keys[positions]))
            return
        scorer = self._scorer

        def with_features() -> Iterator[tuple[np.ndarray, Any]]:
            for positions in chunks:
                self.scored += len(positions)  # counted when sent: work ahead that is never used is paid too
                keys = self.keys[positions]
                yield positions, features_table(self._ids_of(keys), self._features(keys), student.input)

        yield from scorer.score_stream(student, self.round, with_features())

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        return self._vectors(self.keys[np.asarray(positions)])

    def labelled_vectors(self) -> np.ndarray:
        return self._vectors_of(self._labelled)

    def teacher_answers(self) -> TeacherAnswers:
        ids = sorted(self._answers)
        index = {label: i for i, label in enumerate(self.labels)}
        return TeacherAnswers(
            self._vectors_of(ids) if ids else np.zeros((0, 0), dtype=np.float32),
            np.array([index[self._answers[d][0]] for d in ids], dtype=np.int64),
            np.array([np.nan if self._answers[d][1] is None else self._answers[d][1] for d in ids], dtype=float))
