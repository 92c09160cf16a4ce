"""DuckDB to Parquet shards and back: the hand-off between the project's database and an engine's workers. Texts
are written in length order, so that a worker's batches hold texts of similar length; vectors are not written at
all, only the rows the workers read them from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kdstudio.free_rows import FreeRows
from kdstudio.store.store import Store
from kdstudio.store.vector_sets import READ_BATCH
from kdstudio.vectors import column_matrix


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
    return _export(store, "SELECT d.id, d.text FROM documents d ANTI JOIN vector_rows v ON v.doc_id = d.id "
                          "AND v.model = ? ORDER BY length(d.text) DESC, d.id", [model], directory, rows_per_shard)


def export_rows(rows: np.ndarray | FreeRows, directory: Path, rows_per_shard: int) -> list[tuple[Path, int]]:
    """Rows of the vector shards, in the order given (`rows` sliced a shard at a time, never copied whole): what a
    worker reads an embeddings student's input by. The row also names the document to the tie-breaking of a ranking
    (kdstudio.uncertainty.tie_jitter)."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(rows), rows_per_shard)):
        part = np.asarray(rows[start:start + rows_per_shard], dtype=np.int64)
        path = directory / f"part-{number:06d}.parquet"
        pq.write_table(pa.table({"row": part}), path)
        shards.append((path, len(part)))
    return shards


def export_pool_texts(store: Store, model: str, directory: Path, rows_per_shard: int) -> list[tuple[Path, int]]:
    """The imported pool documents as a text student reads them: (id, row, text), longest first."""
    return _export(store, "SELECT d.id, v.row, d.text FROM documents d JOIN vector_rows v ON v.doc_id = d.id "
                          "AND v.model = ? WHERE d.split = 'pool' AND d.source = 'imported' "
                          "ORDER BY length(d.text) DESC, d.id", [model], directory, rows_per_shard)


def load_embeddings(store: Store, model: str, files: Sequence[Path], vector_type: str = "float32") -> int:
    """Vectors from an engine's output shards into the model's vector shards, a committed batch at a time; a
    document already embedded, or present twice, is stored once. Returns how many were added."""
    before = store.embedding_count(model)
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH, columns=["id", "vector"]):
            store.save_embeddings(model, batch.column(0).to_pylist(), column_matrix(batch.column(1)), vector_type)
    return store.embedding_count(model) - before
