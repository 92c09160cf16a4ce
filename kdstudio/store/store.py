"""The project's DuckDB file: opening, locking, migrations and queries. SQL lives only in kdstudio/store/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from kdstudio.errors import KdError, ProjectLocked, ProjectNotFound, ReadOnlyProject, SchemaError
from kdstudio.store.schema import LATEST_VERSION, MIGRATIONS
from kdstudio.vectors import column_matrix, vectors_column

DB_NAME = "kdstudio.duckdb"
# Vectors read at a time when the whole of a model's are loaded (about 100 MB at 384 dimensions).
READ_BATCH = 65536


def _lock_error(path: Path, exc: duckdb.Error) -> ProjectLocked:
    text = str(exc)
    pid = re.search(r"PID (\d+)", text)
    holder = f"process {pid.group(1)}" if pid else "another process"
    return ProjectLocked(
        f"project is open in {holder}: DuckDB holds a write lock on {path}",
        f"wait for that process to finish (or stop it{' with `kill ' + pid.group(1) + '`' if pid else ''}); "
        "one process at a time may write a project",
        pid=int(pid.group(1)) if pid else None,
    )


def _read_only(path: Path) -> ReadOnlyProject:
    return ReadOnlyProject(f"the project in {path.parent} is read-only, and this command writes to it",
                           "make the folder and kdstudio.duckdb writable, or work on a copy; reading commands (status, "
                           "runs, cost, audit, review report, export) work as it is")


_DAMAGED_FIX = ("restore kdstudio.duckdb from a backup or copy, or start a new project with `kdstudio init`; "
                "kdstudio.toml (the label set) is kept beside it")


def _damaged(path: Path, exc: duckdb.Error) -> SchemaError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = reason.removeprefix("IO Error: ")
    return SchemaError(f"{path} is not a readable kdstudio database ({reason})", _DAMAGED_FIX)


class Store:
    """One open project database. A Store is used by one thread at a time: another thread takes its own `cursor()`
    (a DuckDB cursor: the same database, its own connection state and transactions)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path
        self._open_transactions = 0

    # -- opening -------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> Store:
        if path.exists():
            raise SchemaError(f"{path} already exists", "open it instead, or choose another directory")
        store = cls._connect(path)
        store.migrate()
        return store

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Store:
        if not path.exists():
            raise ProjectNotFound(
                f"no project database at {path}", f"create one with `kdstudio init {path.parent} --labels a,b`"
            )
        if path.is_dir():
            raise SchemaError(f"{path} is a folder, not a project database", _DAMAGED_FIX)
        store = cls._connect(path, read_only=read_only)
        try:
            version = store.schema_version()
        except duckdb.Error as exc:
            store.close()
            raise _damaged(path, exc) from None
        if version > LATEST_VERSION:
            store.close()
            raise SchemaError(
                f"{path} has schema version {version}, newer than this kdstudio understands ({LATEST_VERSION})",
                "upgrade kdstudio",
            )
        if version < LATEST_VERSION:
            if read_only:
                store.close()
                raise SchemaError(f"{path} needs a migration", "open it once without read-only to migrate")
            store.migrate()
        return store

    @classmethod
    def _connect(cls, path: Path, *, read_only: bool = False) -> Store:
        # DuckDB writes beside the file too (its write-ahead log): a folder or file it cannot write is read-only.
        if not read_only and path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            raise _read_only(path)
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
                raise _lock_error(path, exc) from None
            if not read_only and any(x in str(exc) for x in ("Permission denied", "Read-only file system")):
                raise _read_only(path) from None
            raise _damaged(path, exc) from None
        return cls(con, path)

    def cursor(self) -> Store:
        """A Store for another thread over the same open database; closing it leaves this one open."""
        return Store(self.con.cursor(), self.path)

    def close(self) -> None:
        self.con.close()

    # -- schema --------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        return int(self.con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply every migration above the current version, each in its own transaction."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        target = LATEST_VERSION if target is None else target
        applied = []
        current = self.schema_version()
        for version, description, statements in MIGRATIONS:
            if version <= current or version > target:
                continue
            with self.transaction():
                for statement in statements:
                    self.con.execute(statement)
                self.con.execute("INSERT INTO schema_version (version, description) VALUES (?, ?)",
                                 [version, description])
            applied.append(version)
        return applied

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; one opened inside another joins it (so that writes that are each atomic can also be
        grouped, e.g. a whole batch of free answers in one commit)."""
        if self._open_transactions:
            self._open_transactions += 1
            try:
                yield self.con
            finally:
                self._open_transactions -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._open_transactions = 1
        try:
            yield self.con
        except BaseException:
            self._open_transactions = 0
            self.con.execute("ROLLBACK")
            raise
        self._open_transactions = 0
        self.con.execute("COMMIT")

    def table_names(self) -> list[str]:
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, in a stable order: lets tests prove that a failed step changed nothing."""
        return {t: self.con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in self.table_names()}

    # -- documents -----------------------------------------------------------------------------------

    def document_count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM documents").fetchall()[0][0])

    def documents_by_split_source(self) -> list[tuple[str, str, int]]:
        return self.con.execute(
            "SELECT split, source, count(*) FROM documents GROUP BY split, source ORDER BY "
            "CASE split WHEN 'pool' THEN 0 WHEN 'val' THEN 1 ELSE 2 END, source"
        ).fetchall()

    def gold_distribution(self) -> list[tuple[str, str, int]]:
        return self.con.execute(
            "SELECT g.label, d.split, count(*) FROM gold g JOIN documents d ON d.id = g.doc_id "
            "GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()

    def texts(self, ids: Sequence[str]) -> list[str]:
        """Texts of the given documents, in the order given."""
        table = pa.table({"id": pa.array(list(ids), pa.string()), "pos": pa.array(range(len(ids)), pa.int64())})
        rows = self._query_with("SELECT d.text FROM _ids t JOIN documents d ON d.id = t.id ORDER BY t.pos",
                                _ids=table)
        return [r[0] for r in rows]

    def _query_with(self, sql: str, **tables: pa.Table) -> list[tuple[Any, ...]]:
        for name, table in tables.items():
            self.con.register(name, table)
        try:
            return self.con.execute(sql).fetchall()
        finally:
            for name in tables:
                self.con.unregister(name)

    def extreme_texts(self, chars: int) -> list[tuple[str, str]]:
        """(id, text) of the pool or validation documents whose first `chars` characters take the fewest and the most
        UTF-8 bytes: the least and the most a teacher that cuts documents there sends."""
        rows = []
        for order in ("ASC", "DESC"):
            rows += self.con.execute(
                "SELECT id, text FROM documents WHERE split IN ('pool', 'val') "
                f"ORDER BY strlen(left(text, ?)) {order}, id LIMIT 1", [chars]).fetchall()
        return [(r[0], r[1]) for r in rows]

    def ids_in_split(self, split: str, *, source: str | None = None) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT id FROM documents WHERE split = ? AND (? IS NULL OR source = ?) ORDER BY id",
            [split, source, source]).fetchall()]

    def untouched_pool(self) -> list[tuple[str, str | None]]:
        """(id, gold label or None) of the imported pool documents nothing has labelled or asked a teacher about: the
        ones that can move to another split without changing what any run trained on."""
        return self.con.execute(
            "SELECT d.id, g.label FROM documents d LEFT JOIN gold g ON g.doc_id = d.id "
            "WHERE d.split = 'pool' AND d.source = 'imported' "
            "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.doc_id = d.id) "
            "AND NOT EXISTS (SELECT 1 FROM teacher_calls c WHERE c.doc_id = d.id) ORDER BY d.id").fetchall()

    def move_to_split(self, ids: Sequence[str], split: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE documents SET split = ? WHERE id IN (SELECT unnest(?)) AND split = 'pool'",
                        [split, list(ids)])

    def gold(self, ids: Sequence[str] | None = None) -> dict[str, str]:
        if ids is None:
            return dict(self.con.execute("SELECT doc_id, label FROM gold").fetchall())
        return dict(self.con.execute("SELECT doc_id, label FROM gold WHERE doc_id IN (SELECT unnest(?))",
                                     [list(ids)]).fetchall())

    # -- labels --------------------------------------------------------------------------------------

    def label_counts_by_source(self) -> list[tuple[str, int]]:
        return self.con.execute("SELECT source, count(*) FROM labels GROUP BY 1 ORDER BY 1").fetchall()

    def current_label_distribution(self) -> list[tuple[str, int]]:
        """Effective label per document: the newest human label, else the newest teacher label."""
        return self.con.execute(
            """
            SELECT label, count(*) FROM (
                SELECT doc_id, arg_max(label, (source = 'human', id)) AS label FROM labels GROUP BY doc_id
            ) GROUP BY 1 ORDER BY 1
            """
        ).fetchall()

    def labels_in_use(self) -> list[str]:
        """Every label a gold, teacher or human label row holds."""
        return [r[0] for r in self.con.execute(
            "SELECT label FROM labels UNION SELECT label FROM gold ORDER BY 1").fetchall()]

    # -- embeddings ----------------------------------------------------------------------------------

    def ids_missing_embedding(self, model: str) -> list[str]:
        """Documents without a vector for `model`, longest first, so batches hold texts of similar length."""
        rows = self.con.execute(
            "SELECT d.id FROM documents d ANTI JOIN embeddings e ON e.doc_id = d.id AND e.model = ? "
            "ORDER BY length(d.text) DESC, d.id",
            [model],
        ).fetchall()
        return [r[0] for r in rows]

    def save_embeddings(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write one batch in one transaction: a kill loses at most the batch in flight."""
        table = pa.table(
            {
                "doc_id": pa.array(list(ids), pa.string()),
                "vector": vectors_column(vectors),
            }
        )
        self.con.register("_batch", table)
        try:
            with self.transaction():
                self.con.execute(
                    "INSERT INTO embeddings (doc_id, model, vector) SELECT doc_id, ?, vector FROM _batch "
                    "ON CONFLICT DO NOTHING",
                    [model],
                )
        finally:
            self.con.unregister("_batch")

    def embedding_matrix(self, model: str) -> tuple[list[str], np.ndarray]:
        """Every stored vector of `model` as (ids, float32 matrix), read through Arrow without row loops, a batch at a
        time into one matrix allocated up front: the corpus's vectors are never held twice (a whole Arrow table and
        the matrix made from it held them three times at the peak)."""
        n, dim = self.con.execute("SELECT count(*), coalesce(max(len(vector)), 0) FROM embeddings WHERE model = ?",
                                  [model]).fetchall()[0]
        matrix = np.zeros((n, dim), dtype=np.float32)
        ids: list[str] = []
        relation = self.con.sql("SELECT doc_id, vector FROM embeddings WHERE model = ? ORDER BY doc_id",
                                params=[model])
        # to_arrow_reader is DuckDB 1.4's name for what older releases call fetch_record_batch.
        reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
        for batch in reader(READ_BATCH):
            rows = column_matrix(batch.column(1))
            matrix[len(ids):len(ids) + len(rows)] = rows
            ids.extend(batch.column(0).to_pylist())
        return ids, matrix

    def vectors(self, model: str, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids`, in the order given (every id must have one)."""
        table = pa.table({"id": pa.array(list(ids), pa.string()), "pos": pa.array(range(len(ids)), pa.int64())})
        self.con.register("_vector_ids", table)
        try:
            found = self.con.sql("SELECT e.vector FROM _vector_ids t JOIN embeddings e ON e.doc_id = t.id "
                                 "AND e.model = ? ORDER BY t.pos", params=[model]).to_arrow_table()
        finally:
            self.con.unregister("_vector_ids")
        if found.num_rows != len(ids):
            raise KdError(f"{len(ids) - found.num_rows} documents have no {model} vector", "run `kdstudio embed`")
        return column_matrix(found.column("vector"))

    def import_sources(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT source FROM imports ORDER BY 1").fetchall()]

    def embedding_coverage(self) -> list[tuple[str, int, int]]:
        """(model, documents with a vector, vector dimension) per model."""
        return self.con.execute(
            "SELECT model, count(*), max(len(vector)) FROM embeddings GROUP BY 1 ORDER BY 1"
        ).fetchall()

    def embedding_count(self, model: str) -> int:
        return int(self.con.execute("SELECT count(*) FROM embeddings WHERE model = ?", [model]).fetchall()[0][0])

    # -- money ---------------------------------------------------------------------------------------

    def spend(self) -> tuple[float, int, int]:
        """(USD spent, calls made, calls that failed)."""
        usd, calls, errors = self.con.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*), count(error) FROM teacher_calls"
        ).fetchall()[0]
        return float(usd), int(calls), int(errors)
