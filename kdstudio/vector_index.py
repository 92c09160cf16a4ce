"""The vectors a run works with: one float32 matrix, a row per document, read from DuckDB once per run."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from kdstudio.store import Store


class VectorIndex:
    """Every stored vector of one embedding model, addressed by integer row. Rows follow the documents' ids in
    sorted order; samples generated during the run are appended (the matrix grows by doubling, so that appending
    a round's samples never copies the whole corpus). `pool` marks the imported pool documents, the ones a
    selector may choose from."""

    def __init__(self, ids: Sequence[str], matrix: np.ndarray) -> None:
        self._n = len(ids)
        self._ids = np.array(ids, dtype=object)
        self._matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.row_of = {doc_id: row for row, doc_id in enumerate(ids)}
        self.pool = np.zeros(self._n, dtype=bool)

    @classmethod
    def from_store(cls, store: Store, model: str) -> VectorIndex:
        ids, matrix = store.embedding_matrix(model)
        return cls(ids, matrix)

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._matrix.shape[1] if self._matrix.ndim == 2 else 0

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._n]

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.row_of

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.row_of[d] for d in ids), dtype=np.int64)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._matrix[rows]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._matrix[self.rows(ids)]

    def missing(self, ids: Iterable[str]) -> list[str]:
        return [d for d in ids if d not in self.row_of]

    def mark_pool(self, ids: Iterable[str]) -> None:
        self.pool[self.rows(ids)] = True

    def free_rows(self, taken: Iterable[str]) -> np.ndarray:
        """Pool rows, in row order, except `taken` documents (already bought, or labelled by a person)."""
        mask = self.pool.copy()
        mask[self.rows(d for d in taken if d in self.row_of)] = False
        return np.flatnonzero(mask)

    def append(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add documents that are new to the index (generated samples); they are never pool rows."""
        fresh = [i for i, d in enumerate(ids) if d not in self.row_of]
        if not fresh:
            return
        need = self._n + len(fresh)
        if need > len(self._matrix):
            grown = max(need, 2 * len(self._matrix))
            self._matrix = np.concatenate([self._matrix, np.zeros((grown - len(self._matrix), vectors.shape[1]),
                                                                  dtype=np.float32)])
            self._ids = np.concatenate([self._ids, np.empty(grown - len(self._ids), dtype=object)])
            self.pool = np.concatenate([self.pool, np.zeros(grown - len(self.pool), dtype=bool)])
        for i in fresh:
            self._matrix[self._n] = vectors[i]
            self._ids[self._n] = ids[i]
            self.row_of[ids[i]] = self._n
            self._n += 1
