"""The documents a run works with, addressed by integer row: rows follow the documents' ids in sorted order, and each
row knows where its vector lies in the shards on disk. Neither ids nor vectors are held: a row's id and vector are
read when asked (and remembered for the documents the run touches, vectors up to KEPT_VECTORS of them), so what the
index holds is about 9 bytes a pool document (20M documents: 180 MB) and what grows with the run's labels."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from kdstudio.errors import KdError
from kdstudio.free_rows import FreeRows, block_counts
from kdstudio.store import Store

# Vectors of documents asked for by id that a run keeps (24 MB at 384 dimensions).
KEPT_VECTORS = 16384


def _narrow(rows: np.ndarray) -> np.ndarray:
    """Rows as int32 while they fit (half the memory: 80 MB at 20M documents)."""
    return rows.astype(np.int32) if not len(rows) or rows.max() < 2**31 - 1 else rows


class VectorIndex:
    """Every document with a vector of one embedding model. Samples generated during the run are appended. `pool`
    marks the imported pool documents, the ones a selector may choose from."""

    def __init__(self, store: Store, model: str) -> None:
        # Its own cursor, behind a lock: teachers may read vectors from their worker threads.
        self._store = store.cursor()
        self._lock = threading.Lock()
        self._model = model
        self._shard_rows = _narrow(store.vector_rows_in_id_order(model))  # index row -> shard row
        self._index_of = self._inverse(self._shard_rows)  # shard row -> index row, -1 where none
        shards = store.vector_shards(model)
        self._shards = shards
        self.dim = shards.dim if shards is not None else 0
        self.pool = np.zeros(len(self._shard_rows), dtype=bool)
        self._pool_counts: np.ndarray | None = None  # pool rows a block, for FreeRows; counted when first asked
        # The documents the run has touched (selected, labelled, validation, test): they grow with the labels, not
        # with the pool, and each costs a scan of the corpus's rows to resolve the first time only.
        self._row_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._kept: dict[int, np.ndarray] = {}  # index row -> vector, for documents asked for by id

    @staticmethod
    def _inverse(shard_rows: np.ndarray) -> np.ndarray:
        inverse = np.full(int(shard_rows.max()) + 1 if len(shard_rows) else 0, -1, dtype=np.int32)
        inverse[shard_rows] = np.arange(len(shard_rows), dtype=np.int32)
        return inverse

    @classmethod
    def from_store(cls, store: Store, model: str) -> VectorIndex:
        return cls(store, model)

    def __len__(self) -> int:
        return len(self._shard_rows)

    def _read(self, shard_rows: np.ndarray) -> np.ndarray:
        if self._shards is None or not len(shard_rows):
            return np.zeros((len(shard_rows), self.dim), dtype=np.float32)
        return self._shards.read(shard_rows)

    def _remember(self, pairs: Iterable[tuple[str, int]]) -> None:
        for doc_id, row in pairs:
            self._row_of[doc_id], self._id_of[row] = row, doc_id

    def _resolve(self, ids: Iterable[str]) -> None:
        unknown = sorted({d for d in ids if d not in self._row_of})
        if unknown:
            with self._lock:
                found = self._store.vector_rows_of(self._model, unknown)
            # A vector stored after the index was read, and never appended to it, is not the run's.
            self._remember((d, int(self._index_of[r])) for d, r in found.items()
                           if r < len(self._index_of) and self._index_of[r] >= 0)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Index rows of `ids` (every id must have a vector)."""
        self._resolve(ids)
        missing = sum(1 for d in ids if d not in self._row_of)
        if missing:
            raise KdError(f"{missing} documents have no {self._model} vector", "run `kdstudio embed`")
        return np.fromiter((self._row_of[d] for d in ids), dtype=np.int64, count=len(ids))

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The documents at index `rows`, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        unknown = sorted({int(r) for r in rows} - self._id_of.keys())
        if unknown:
            with self._lock:
                ids = self._store.vector_ids(self._model, self._shard_rows[np.array(unknown, dtype=np.int64)])
            self._remember(zip(ids, unknown, strict=True))
        return [self._id_of[int(r)] for r in rows]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The vectors of documents asked for by id: the run's labelled, validation and test documents, a free
        labeller's sample. Every round reads them again, so the first KEPT_VECTORS are kept: on a pool larger than
        the page cache each read would go to the disk (pool candidates, read once, go through `vectors_at`)."""
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self.rows(ids)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        unread = np.array([r not in self._kept for r in rows.tolist()], dtype=bool)
        if unread.any():
            read = self.vectors_at(rows[unread])
            out[unread] = read
            with self._lock:
                for row, vector in zip(rows[unread].tolist(), read, strict=True):
                    if len(self._kept) < KEPT_VECTORS:
                        self._kept.setdefault(row, vector.copy())
        for i in np.flatnonzero(~unread):
            out[i] = self._kept[int(rows[i])]
        return out

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return self._read(self._shard_rows[np.asarray(rows, dtype=np.int64)])

    def shard_rows_at(self, rows: np.ndarray) -> np.ndarray:
        """Where the documents at index `rows` lie in the vector shards."""
        return self._shard_rows[np.asarray(rows, dtype=np.int64)].astype(np.int64)

    def rows_at_shard_rows(self, shard_rows: np.ndarray) -> np.ndarray:
        """The index rows of documents by their shard rows (-1 for a shard row the index does not hold)."""
        shard_rows = np.asarray(shard_rows, dtype=np.int64)
        inside = (shard_rows >= 0) & (shard_rows < len(self._index_of))
        rows = np.full(len(shard_rows), -1, dtype=np.int64)
        rows[inside] = self._index_of[shard_rows[inside]]
        return rows

    def known(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that have a vector."""
        ids = list(ids)
        self._resolve(ids)
        return {d for d in ids if d in self._row_of}

    def missing(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        known = self.known(ids)
        return [d for d in ids if d not in known]

    def mark_pool(self) -> None:
        """Mark the imported pool documents (a selector's choices), read from the store."""
        with self._lock:
            shard_rows = self._store.pool_vector_rows(self._model)
        self.pool[self._index_of[shard_rows]] = True
        self._pool_counts = None

    def pool_sample(self, limit: int, rng: np.random.Generator) -> list[str]:
        """What steps.slice_ids(sorted pool ids, limit, rng) gives, without listing every pool id."""
        rows = self.free_rows([])
        if len(rows) <= limit:
            return self.ids_at(rows[:])
        return self.ids_at(rows[np.sort(rng.choice(len(rows), size=limit, replace=False))])

    def free_rows(self, taken: Iterable[str]) -> FreeRows:
        """Pool rows, in row order, except `taken` documents (already bought, or labelled by a person): never listed
        whole, so a round costs what it reads, not the pool's size."""
        if self._pool_counts is None:
            self._pool_counts = block_counts(self.pool)
        return FreeRows(self.pool, self.rows(list(self.known(taken))), self._pool_counts)

    def append(self, shard_rows: np.ndarray) -> None:
        """Add documents that are new to the index (generated samples, whose vectors were just stored), in the order
        given; they are never pool rows."""
        shard_rows = np.asarray(shard_rows, dtype=np.int64)
        known = shard_rows < len(self._index_of)
        known[known] = self._index_of[shard_rows[known]] >= 0
        fresh = shard_rows[~known]
        fresh = fresh[np.sort(np.unique(fresh, return_index=True)[1])]
        if not len(fresh):
            return
        self._shard_rows = _narrow(np.concatenate([self._shard_rows, fresh]))
        self._index_of = self._inverse(self._shard_rows)
        self.pool = np.concatenate([self.pool, np.zeros(len(fresh), dtype=bool)])
        self._pool_counts = None
