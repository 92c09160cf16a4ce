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
from kdstudio.memory_size import memory_bytes
from kdstudio.store.schema import LATEST_VERSION, MIGRATIONS
from kdstudio.store.vector_sets import READ_BATCH, arrow_batches, set_directory
from kdstudio.store.vector_shards import VectorShards

DB_NAME = "kdstudio.duckdb"


def _numbered(column: str, values: Sequence[Any] | np.ndarray) -> pa.Table:
    """`values` (ids, or an integer array) as a table (column, pos): what a query joins to keep the order given."""
    array = pa.array(values) if isinstance(values, np.ndarray) else pa.array(list(values), pa.string())
    return pa.table({column: array, "pos": pa.array(np.arange(len(values), dtype=np.int64))})


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


# The documents of a split that have a gold label. An inner join, so that DuckDB builds its table on the split, not on
# a gold table that may hold every id.
_SPLIT_WITH_GOLD = "SELECT d.id FROM documents d JOIN gold g ON g.doc_id = d.id WHERE d.split = ?"
_SPLIT = "SELECT id FROM documents WHERE split = ?"
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
        self._memory_limit: str | None = None

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
                    if callable(statement):
                        statement(self.con, self.path.parent)
                    else:
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

    @contextmanager
    def memory_limit(self, limit: str) -> Iterator[None]:
        """DuckDB's memory bounded to `limit` inside the `with` (it spills joins and sorts to disk beyond it): by
        default it may take 80% of the machine, and keeps what it read cached up to that. Inside another such `with`
        (a job's hand-off inside a run), the inner limit holds until it ends; the default comes back when the
        outermost ends."""
        outer = self._memory_limit
        self.con.execute(f"SET memory_limit = '{limit}'")
        self._memory_limit = limit
        try:
            yield
        finally:
            self._memory_limit = outer
            self.con.execute("RESET memory_limit" if outer is None else f"SET memory_limit = '{outer}'")

    def room_for_indexes(self) -> None:
        """Inside a memory limit, widen it by what DuckDB holds of the tables' unique indexes. Each document a run
        writes (a generated sample) loads the index blocks its id falls in, and DuckDB never evicts them: 20 writes a
        round loaded 4-13 MB of index a round into a 10M-document project, and a fixed limit failed the run after a
        few rounds (measured). The limit then bounds what DuckDB may cache, as it says."""
        if self._memory_limit is None:
            return
        held = self.con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                "WHERE tag = 'ART_INDEX'").fetchall()[0][0]
        self.con.execute(f"SET memory_limit = '{memory_bytes(self._memory_limit) + int(held)}B'")

    @contextmanager
    def table_scans_only(self) -> Iterator[None]:
        """Lookups by id scan the table inside the `with`, never its primary key's index. DuckDB loads an index's
        blocks as lookups touch them and never evicts them: a run's lookups of 20 documents a round loaded about
        25 MB of index a round at 10M documents, until its memory limit failed the run (measured)."""
        self.con.execute("SET index_scan_max_count = 0")
        self.con.execute("SET index_scan_percentage = 0")
        try:
            yield
        finally:
            self.con.execute("RESET index_scan_max_count")
            self.con.execute("RESET index_scan_percentage")

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
        """(label, split, gold documents). Counted as the documents outside the pool (few: a join with them) and the
        rest: a join of gold with every document failed at 20M documents under a run's memory limit. Gold is only
        ever written with its document by an import, and no document is deleted."""
        return self.con.execute(
            "WITH outside AS (SELECT g.label, d.split, count(*) AS n FROM gold g JOIN (SELECT id, split FROM "
            "documents WHERE split <> 'pool') d ON d.id = g.doc_id GROUP BY ALL), "
            "total AS (SELECT label, count(*) AS n FROM gold GROUP BY label) "
            "SELECT label, split, n FROM (SELECT label, split, n FROM outside UNION ALL SELECT t.label, 'pool', "
            "t.n - coalesce((SELECT sum(o.n) FROM outside o WHERE o.label = t.label), 0) FROM total t) "
            "WHERE n > 0 ORDER BY 1, 2"
        ).fetchall()

    def texts(self, ids: Sequence[str]) -> list[str]:
        """Texts of the given documents, in the order given."""
        rows = self._query_with("SELECT d.text FROM _ids t JOIN documents d ON d.id = t.id ORDER BY t.pos",
                                _ids=_numbered("id", ids))
        return [r[0] for r in rows]

    def _query_with(self, sql: str, params: list[Any] | None = None, **tables: pa.Table) -> list[tuple[Any, ...]]:
        """`sql` run with Arrow `tables` visible to it under their names: how lookups by id are made. DuckDB answers
        such a join from the primary key's index where it may, loading the index blocks it touches for good (a run
        stops it from doing so: `table_scans_only`)."""
        for name, table in tables.items():
            self.con.register(name, table)
        try:
            return self.con.execute(sql, params).fetchall()
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

    def ids_with_gold(self, split: str) -> list[str]:
        """The documents of `split` that have a gold label, in id order."""
        return [r[0] for r in self.con.execute(f"{_SPLIT_WITH_GOLD} ORDER BY d.id", [split]).fetchall()]

    def has_split(self, split: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM (SELECT 1 FROM documents WHERE split = ? LIMIT 1)",
                                     [split]).fetchall()[0][0])

    def untouched_pool(self, at_most: int | None = None) -> list[tuple[str, str | None]]:
        """(id, gold label or None) of the imported pool documents nothing has labelled or asked a teacher about: the
        ones that can move to another split without changing what any run trained on. With `at_most`, a fixed
        sample of that many (by a hash of the id), still in id order."""
        sample = "" if at_most is None else f"ORDER BY hash(d.id) LIMIT {int(at_most)}"
        return sorted(self.con.execute(
            "SELECT d.id, g.label FROM documents d LEFT JOIN gold g ON g.doc_id = d.id "
            "WHERE d.split = 'pool' AND d.source = 'imported' "
            "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.doc_id = d.id) "
            f"AND NOT EXISTS (SELECT 1 FROM teacher_calls c WHERE c.doc_id = d.id) {sample}").fetchall())

    def touched_pool_count(self) -> int:
        """Imported pool documents that something labelled or asked a teacher about: those untouched_pool leaves out."""
        return int(self.con.execute(
            "SELECT count(*) FROM documents d WHERE d.split = 'pool' AND d.source = 'imported' "
            "AND (EXISTS (SELECT 1 FROM labels l WHERE l.doc_id = d.id) "
            "OR EXISTS (SELECT 1 FROM teacher_calls c WHERE c.doc_id = d.id))").fetchall()[0][0])

    def move_to_split(self, ids: Sequence[str], split: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE documents SET split = ? WHERE id IN (SELECT unnest(?)) AND split = 'pool'",
                        [split, list(ids)])

    def gold(self, ids: Sequence[str] | None = None) -> dict[str, str]:
        if ids is None:
            return dict(self.con.execute("SELECT doc_id, label FROM gold").fetchall())
        return dict(self.con.execute("SELECT doc_id, label FROM gold WHERE doc_id IN (SELECT unnest(?))",
                                     [list(ids)]).fetchall())

    def in_pool(self, ids: Sequence[str]) -> set[str]:
        """Those of `ids` that are imported pool documents."""
        return {r[0] for r in self._query_with(
            "SELECT t.id FROM _ids t SEMI JOIN documents d ON d.id = t.id AND d.split = 'pool' "
            "AND d.source = 'imported'", _ids=_numbered("id", ids))}

    def _ids_at(self, ordered: str, positions: np.ndarray, params: list[Any] | None = None) -> list[str]:
        """The ids at `positions` of a query's id order (`ordered` selects `id`), in the order given."""
        return [r[0] for r in self._query_with(
            f"SELECT o.id FROM _positions p JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n "
            f"FROM ({ordered})) o ON o.n = p.n ORDER BY p.pos", params, _positions=_numbered("n", positions))]

    def split_sample(self, split: str, limit: int | None, rng: np.random.Generator, *,
                     with_gold: bool = False) -> list[str]:
        """What steps.slice_ids(the split's ids in id order, limit, rng) gives (only those with gold, `with_gold`),
        without listing the split: 1% of 10M documents is 100,000 Python strings."""
        ordered = _SPLIT_WITH_GOLD if with_gold else _SPLIT
        n = int(self.con.execute(f"SELECT count(*) FROM ({ordered})", [split]).fetchall()[0][0])
        if limit is None or n <= limit:
            return self.ids_with_gold(split) if with_gold else self.ids_in_split(split)
        return self._ids_at(ordered, np.sort(rng.choice(n, size=limit, replace=False)), [split])

    def gold_ids_at(self, positions: np.ndarray) -> list[str]:
        """The gold documents at `positions` of their id order, in the order given."""
        return self._ids_at("SELECT doc_id AS id FROM gold", positions)

    def pool_ids_at(self, positions: np.ndarray) -> list[str]:
        """The imported pool documents at `positions` of their id order, in the order given."""
        return self._ids_at("SELECT id FROM documents WHERE split = 'pool' AND source = 'imported'", positions)

    def pool_size(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM documents WHERE split = 'pool' AND source = 'imported'"
                                    ).fetchall()[0][0])

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

    def missing_texts(self, model: str, batch_rows: int, sort_by_length: bool = True) -> Iterator[pa.RecordBatch]:
        """(id, text) of the documents without a `model` vector, `batch_rows` at a time, longest first (batches of
        similar length) or in a fixed shuffled order; read through a cursor of its own, so the caller may write
        between batches, and never listed whole in Python."""
        order = "length(d.text) DESC, d.id" if sort_by_length else "hash(d.id), d.id"
        cursor = self.con.cursor()
        try:
            yield from cursor.sql(
                f"SELECT d.id, d.text FROM documents d ANTI JOIN vector_rows v ON v.doc_id = d.id AND v.model = ? "
                f"ORDER BY {order}", params=[model]).to_arrow_reader(batch_rows)
        finally:
            cursor.close()

    def count_missing_embedding(self, model: str) -> int:
        # A difference of counts, not a join: every vector belongs to a document (save_embeddings stores none for
        # an unknown id, and no document is ever deleted), and the join held 10M ids in memory at every start.
        return int(self.con.execute("SELECT (SELECT count(*) FROM documents) - (SELECT count(*) FROM vector_rows "
                                    "WHERE model = ?)", [model]).fetchall()[0][0])

    def ids_missing_embedding(self, model: str) -> list[str]:
        """Documents without a vector for `model`, longest first, so batches hold texts of similar length."""
        rows = self.con.execute(
            "SELECT d.id FROM documents d ANTI JOIN vector_rows v ON v.doc_id = d.id AND v.model = ? "
            "ORDER BY length(d.text) DESC, d.id",
            [model],
        ).fetchall()
        return [r[0] for r in rows]

    def vector_shards(self, model: str) -> VectorShards | None:
        """The shards holding `model`'s vectors, or None before its first vector."""
        found = self.con.execute("SELECT directory FROM vector_sets WHERE model = ?", [model]).fetchall()
        return VectorShards.open(self.path.parent / found[0][0]) if found else None

    def save_embeddings(self, model: str, ids: Sequence[str], vectors: np.ndarray,
                        vector_type: str = "float32") -> None:
        """Append one batch to the model's shards and record its rows in one transaction: a kill loses at most the
        batch in flight. A document that already has a vector, or comes twice, keeps its first. `vector_type` is
        how a model's first vectors are stored; later ones join its shards as they are."""
        with self.transaction():
            fresh = np.array([r[0] for r in self._query_with(
                "SELECT min(b.pos) FROM _ids b SEMI JOIN documents d ON d.id = b.id "
                "ANTI JOIN vector_rows v ON v.doc_id = b.id AND v.model = ? GROUP BY b.id ORDER BY 1",
                [model], _ids=_numbered("id", ids))], dtype=np.int64)
            if len(fresh):
                self._append_vectors(model, [ids[i] for i in fresh], np.asarray(vectors)[fresh], vector_type)

    def _append_vectors(self, model: str, ids: list[str], vectors: np.ndarray, vector_type: str) -> None:
        found = self.con.execute("SELECT rows, directory FROM vector_sets WHERE model = ?", [model]).fetchall()
        if found:
            start, shards = int(found[0][0]), VectorShards.open(self.path.parent / found[0][1])
        else:
            start, directory = 0, set_directory(model)
            shards = VectorShards.create(self.path.parent / directory, int(vectors.shape[1]), vector_type)
            self.con.execute("INSERT INTO vector_sets VALUES (?, ?, ?, ?, 0)",
                             [model, shards.dim, shards.dtype, directory])
        shards.write(start, vectors)
        # A batch's rows are consecutive: the shard row is where the batch starts plus the id's place in it.
        self._query_with("INSERT INTO vector_rows (doc_id, model, row) SELECT id, ?, ? + pos FROM _ids",
                         [model, start], _ids=_numbered("id", ids))
        self.con.execute("UPDATE vector_sets SET rows = ? WHERE model = ?", [start + len(ids), model])

    def vector_rows(self, model: str, ids: Sequence[str]) -> np.ndarray:
        """The shard rows of `ids`, in the order given (every id must have one)."""
        found = self._query_with("SELECT v.row FROM _ids t JOIN vector_rows v ON v.doc_id = t.id AND v.model = ? "
                                 "ORDER BY t.pos", [model], _ids=_numbered("id", ids))
        if len(found) != len(ids):
            raise KdError(f"{len(ids) - len(found)} documents have no {model} vector", "run `kdstudio embed`")
        return np.array([r[0] for r in found], dtype=np.int64)

    def vectors(self, model: str, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids`, in the order given (every id must have one)."""
        rows = self.vector_rows(model, ids)
        shards = self.vector_shards(model)
        return shards.read(rows) if shards is not None else np.zeros((0, 0), dtype=np.float32)

    def vector_ids_rows(self, model: str) -> tuple[list[str], np.ndarray]:
        """Every document with a `model` vector, in id order, and its shard row: read a batch at a time."""
        n = self.embedding_count(model)
        rows = np.empty(n, dtype=np.int64)
        ids: list[str] = []
        relation = self.con.sql("SELECT doc_id, row FROM vector_rows WHERE model = ? ORDER BY doc_id",
                                params=[model])
        for batch in arrow_batches(relation, READ_BATCH):
            rows[len(ids):len(ids) + batch.num_rows] = batch.column(1).to_numpy()
            ids.extend(batch.column(0).to_pylist())
        return ids, rows

    def vector_set_rows(self, model: str) -> int:
        """How many shard rows `model`'s vectors fill (each belongs to one document)."""
        found = self.con.execute("SELECT rows FROM vector_sets WHERE model = ?", [model]).fetchall()
        return int(found[0][0]) if found else 0

    def vector_ids(self, model: str, rows: np.ndarray) -> list[str]:
        """The documents owning shard `rows`, in the order given."""
        return [r[0] for r in self._query_with(
            "SELECT v.doc_id FROM _rows s JOIN vector_rows v ON v.row = s.row AND v.model = ? ORDER BY s.pos",
            [model], _rows=_numbered("row", rows))]

    def vector_rows_of(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        """The shard row of each of `ids` that has a `model` vector."""
        return dict(self._query_with("SELECT v.doc_id, v.row FROM _ids t JOIN vector_rows v ON v.doc_id = t.id "
                                     "AND v.model = ?", [model], _ids=_numbered("id", ids)))

    def non_pool_vector_rows(self, model: str, batch_rows: int) -> Iterator[np.ndarray]:
        """The shard rows of the documents that are not imported pool documents (validation, test, check, generated),
        `batch_rows` at a time: every other row is a pool document's, since every vector belongs to a document."""
        cursor = self.con.cursor()
        try:
            # The hash table is built on the few documents outside the pool, as written: DuckDB's estimate of the
            # model filter would have it built on every vector row instead, which failed at 20M documents under the
            # run's memory limit (measured). The setting holds for the whole database until it is reset.
            cursor.execute("SET disabled_optimizers = 'build_side_probe_side'")
            relation = cursor.sql("SELECT v.row FROM vector_rows v SEMI JOIN (SELECT id FROM documents WHERE NOT "
                                  "(split = 'pool' AND source = 'imported')) d ON d.id = v.doc_id WHERE v.model = ?",
                                  params=[model])
            for batch in arrow_batches(relation, batch_rows):
                yield batch.column(0).to_numpy().astype(np.int64, copy=False)
        finally:
            cursor.execute("RESET disabled_optimizers")
            cursor.close()

    def pool_without_vector(self, model: str) -> int:
        if not self.count_missing_embedding(model):  # counted without a join over the corpus
            return 0
        return int(self.con.execute(
            "SELECT count(*) FROM documents d ANTI JOIN vector_rows v ON v.doc_id = d.id AND v.model = ? "
            "WHERE d.split = 'pool'", [model]).fetchall()[0][0])

    def embedding_matrix(self, model: str) -> tuple[list[str], np.ndarray]:
        """Every stored vector of `model` as (ids in id order, float32 matrix): for small corpora and checks; the
        loop reads rows as it needs them (VectorIndex)."""
        ids, rows = self.vector_ids_rows(model)
        shards = self.vector_shards(model)
        return ids, shards.read(rows) if shards is not None else np.zeros((0, 0), dtype=np.float32)

    def import_sources(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT source FROM imports ORDER BY 1").fetchall()]

    def embedding_coverage(self) -> list[tuple[str, int, int]]:
        """(model, documents with a vector, vector dimension) per model."""
        return self.con.execute(
            "SELECT s.model, coalesce(c.n, 0), s.dim FROM vector_sets s LEFT JOIN (SELECT model, count(*) AS n "
            "FROM vector_rows GROUP BY model) c ON c.model = s.model ORDER BY 1"
        ).fetchall()

    def embedding_count(self, model: str) -> int:
        return int(self.con.execute("SELECT count(*) FROM vector_rows WHERE model = ?", [model]).fetchall()[0][0])

    # -- money ---------------------------------------------------------------------------------------

    def spend(self) -> tuple[float, int, int]:
        """(USD spent, calls made, calls that failed)."""
        usd, calls, errors = self.con.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*), count(error) FROM teacher_calls"
        ).fetchall()[0]
        return float(usd), int(calls), int(errors)
