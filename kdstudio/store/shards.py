"""DuckDB to Parquet shards and back: the hand-off between the project's database and an engine's workers. Shards
are written in length order, so that a worker's batches hold texts of similar length."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdstudio.store.store import Store


def _export(store: Store, sql: str, params: list[Any], directory: Path, rows_per_shard: int
            ) -> list[tuple[Path, int]]:
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    reader = store.con.sql(sql, params=params).to_arrow_reader(rows_per_shard)
    for number, batch in enumerate(reader):
        if not batch.num_rows:
            continue
        path = directory / f"part-{number:06d}.parquet"
        pq.write_table(pa.Table.from_batches([batch]), path)
        shards.append((path, batch.num_rows))
    return shards


def export_missing_texts(store: Store, model: str, directory: Path, rows_per_shard: int) -> list[tuple[Path, int]]:
    """(id, text) of every document without a `model` vector, longest first."""
    return _export(store, "SELECT d.id, d.text FROM documents d ANTI JOIN embeddings e ON e.doc_id = d.id "
                          "AND e.model = ? ORDER BY length(d.text) DESC, d.id", [model], directory, rows_per_shard)


def export_pool(store: Store, model: str, student_input: str, directory: Path, rows_per_shard: int
                ) -> list[tuple[Path, int]]:
    """The imported pool documents as a student reads them: (id, vector) or (id, text)."""
    if student_input == "embeddings":
        return _export(store, "SELECT d.id, e.vector FROM documents d JOIN embeddings e ON e.doc_id = d.id "
                              "AND e.model = ? WHERE d.split = 'pool' AND d.source = 'imported' ORDER BY d.id",
                       [model], directory, rows_per_shard)
    return _export(store, "SELECT id, text FROM documents WHERE split = 'pool' AND source = 'imported' "
                          "ORDER BY length(text) DESC, id", [], directory, rows_per_shard)


def load_embeddings(store: Store, model: str, files: Sequence[Path]) -> int:
    """Vectors from an engine's output shards, in one transaction; a document already embedded, or present twice,
    is stored once. Returns how many were added."""
    if not files:
        return 0
    before = store.embedding_count(model)
    with store.transaction() as con:
        con.execute("INSERT INTO embeddings (doc_id, model, vector) "
                    "SELECT DISTINCT ON (o.id) o.id, ?, o.vector FROM read_parquet(?) o "
                    "SEMI JOIN documents d ON d.id = o.id ON CONFLICT DO NOTHING",
                    [model, [str(f) for f in files]])
    return store.embedding_count(model) - before
