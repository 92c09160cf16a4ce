"""Gold labels as a run reads them: read when asked, and kept. A user's project has gold on its validation and test
documents, if anywhere; a benchmark's has it on every document, for the simulated teacher. A run asks for the
validation and test documents it samples, and for what the simulated teacher labels, in bulk (`prefetch`): neither
a pool of 20 million nor its 1% test split ever becomes Python strings whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from kdstudio.store.store import Store
from kdstudio.store.vector_sets import READ_BATCH, arrow_batches

_MISSING = ""  # labels are never empty (the import refuses them), so "" marks a document known to have none


class GoldLabels(Mapping[str, str]):
    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, str] = {}
        self._size = int(store.con.execute("SELECT count(*) FROM gold").fetchall()[0][0])
        self._all_known = self._size == 0  # a project without gold asks nothing

    def _lookup(self, doc_id: str) -> str:
        self.prefetch([doc_id])
        return self._known.get(doc_id, _MISSING)

    def prefetch(self, ids: Iterable[str]) -> None:
        """Read the gold of `ids` in one query: lookups that follow (a simulated teacher labelling them, a metric
        over them) ask nothing more."""
        unknown = [] if self._all_known else sorted({d for d in ids if d not in self._known})
        if unknown:
            found = self._store.gold(unknown)
            self._known.update({d: found.get(d, _MISSING) for d in unknown})

    def __getitem__(self, doc_id: str) -> str:
        label = self._lookup(doc_id)
        if label == _MISSING:
            raise KeyError(doc_id)
        return label

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._lookup(doc_id) != _MISSING

    def __len__(self) -> int:
        return self._size

    def _stream(self, columns: str) -> Iterator[Any]:
        # A cursor of its own: lookups made while this is read must not cut its result short.
        relation = self._store.cursor().con.sql(f"SELECT {columns} FROM gold ORDER BY doc_id")
        for batch in arrow_batches(relation, READ_BATCH):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    def __iter__(self) -> Iterator[str]:
        """Every gold document's id, in id order, read a batch at a time."""
        return (row[0] for row in self._stream("doc_id"))

    def items(self) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        """(id, label) of every gold document, in id order, read a batch at a time (not a lookup per id)."""
        return self._stream("doc_id, label")

    def sample(self, limit: int, rng: np.random.Generator) -> list[str]:
        """What steps.slice_ids(sorted(self), limit, rng) gives, without listing every id."""
        if self._size <= limit:
            return list(self)
        positions = np.sort(rng.choice(self._size, size=limit, replace=False))
        return self._store.gold_ids_at(positions)
