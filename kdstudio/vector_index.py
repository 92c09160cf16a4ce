"""The documents a run works with, addressed by integer row: a document's row is its row in the vector shards on
disk. Neither ids nor vectors are held: a row's id and vector are read when asked (and remembered for the documents
the run touches, vectors up to KEPT_VECTORS of them), so what the index holds is the pool mask, one bit a document
(20M documents: 2.5 MB), and what grows with the run's labels."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from kdstudio.errors import KdError
from kdstudio.free_rows import FreeRows, PoolMask, block_counts
from kdstudio.store import Store

# Vectors of documents asked for by id that a run keeps (24 MB at 384 dimensions).
KEPT_VECTORS = 16384
# Rows read from the store at once while the pool is marked.
MARK_BATCH = 1 << 20


class VectorIndex:
    """Every document with a vector of one embedding model when the run began, and the samples generated during the
    run (appended). Rows are shard rows: a table of row -> shard row, and its inverse, would cost 8 bytes a document
    and a sort of the whole corpus at every start. `pool` marks the imported pool documents, the ones a selector may
    choose from; pool order is shard order (the order the documents were embedded in)."""

    def __init__(self, store: Store, model: str) -> None:
        # Its own cursor, behind a lock: teachers may read vectors from their worker threads.
        self._store = store.cursor()
        self._lock = threading.Lock()
        self._model = model
        shards = store.vector_shards(model)
        self._shards = shards
        self.dim = shards.dim if shards is not None else 0
        # Rows written later belong to whoever wrote them, not to this run, unless appended.
        self._size = store.vector_set_rows(model)
        self.pool = PoolMask(self._size)
        self._pool_counts: np.ndarray | None = None  # pool rows a block, for FreeRows; counted when first asked
        # The documents the run has touched (selected, labelled, validation, test): they grow with the labels, not
        # with the pool, and each costs a scan of the corpus's rows to resolve the first time only.
        self._row_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._kept: dict[int, np.ndarray] = {}  # row -> vector, for documents asked for by id

    @classmethod
    def from_store(cls, store: Store, model: str) -> VectorIndex:
        return cls(store, model)

    def __len__(self) -> int:
        return self._size

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
            self._remember((d, r) for d, r in found.items() if r < self._size)

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
                ids = self._store.vector_ids(self._model, np.array(unknown, dtype=np.int64))
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
        return self._read(np.asarray(rows, dtype=np.int64))

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
        self.pool[:] = True
        with self._lock:
            for rows in self._store.non_pool_vector_rows(self._model, MARK_BATCH):
                self.pool[rows[rows < self._size]] = False
        self._pool_counts = None

    def pool_sample(self, limit: int, rng: np.random.Generator) -> list[str]:
        """`limit` pool documents drawn at random (all of them if fewer), in row order, without listing the pool."""
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
        """Add documents that are new to the index (generated samples, whose vectors were just stored after every
        row the index holds); they are never pool rows."""
        shard_rows = np.asarray(shard_rows, dtype=np.int64)
        if not len(shard_rows) or shard_rows.max() < self._size:
            return
        self._size = int(shard_rows.max()) + 1
        self.pool.extend(self._size - len(self.pool))
        self._pool_counts = None
