"""Where DuckDB meets the vector shards: one `vector_sets` row per embedding model (its folder, dimension, type and
committed row count) and one `vector_rows` row per embedded document (its row in the shards). The vectors
themselves never enter DuckDB; an older project's are moved out of it by migration 6."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from kdstudio.store.vector_shards import VectorShards
from kdstudio.vectors import column_matrix

VECTORS_DIR = "vectors"
READ_BATCH = 65536

CREATE_TABLES = [
    """CREATE TABLE vector_sets (
        model VARCHAR PRIMARY KEY,
        dim INTEGER NOT NULL,
        dtype VARCHAR NOT NULL,
        directory VARCHAR NOT NULL,
        rows BIGINT NOT NULL
    )""",
    # No key on purpose: DuckDB holds a key's index in memory, which for 20M documents is more than the loop may use.
    # Only save_embeddings writes here, and it adds a document's row once.
    """CREATE TABLE vector_rows (
        doc_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        row BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
]


def set_directory(model: str) -> str:
    """A model's folder, relative to the project: named by a hash, since an encoder's key may hold any character."""
    return f"{VECTORS_DIR}/{hashlib.sha256(model.encode('utf-8')).hexdigest()[:16]}"


def arrow_batches(relation: duckdb.DuckDBPyRelation, rows: int):
    # to_arrow_reader is DuckDB 1.4's name for what older releases call fetch_record_batch.
    reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    return reader(rows)


def move_embeddings_to_shards(con: duckdb.DuckDBPyConnection, project_dir: Path) -> None:
    """Migration 6's step that SQL cannot take: every vector of the old `embeddings` table, written to shards in
    document-id order (the order the loop always read them in), a batch at a time. It runs inside the migration's
    transaction, so a kill leaves the old table as it was and the shards' rows to be written over."""
    models = con.execute("SELECT model, max(len(vector)) FROM embeddings GROUP BY 1 ORDER BY 1").fetchall()
    for model, dim in models:
        directory = set_directory(model)
        shards = VectorShards.create(project_dir / directory, int(dim))
        written = 0
        relation = con.sql("SELECT vector FROM embeddings WHERE model = ? ORDER BY doc_id", params=[model])
        for batch in arrow_batches(relation, READ_BATCH):
            matrix = column_matrix(batch.column(0))
            shards.write(written, matrix)
            written += len(matrix)
        con.execute("INSERT INTO vector_rows (doc_id, model, row, created_at) SELECT doc_id, model, "
                    "row_number() OVER (ORDER BY doc_id) - 1, created_at FROM embeddings WHERE model = ?", [model])
        con.execute("INSERT INTO vector_sets VALUES (?, ?, 'float32', ?, ?)", [model, int(dim), directory, written])
