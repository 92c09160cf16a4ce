"""The DuckDB schema, as forward-only migrations. Never edit a released migration: append a new one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from kdstudio.store.vector_sets import CREATE_TABLES, move_embeddings_to_shards

# A step is SQL, or a function of the connection and the project's folder for what SQL cannot do.
Step = str | Callable[[duckdb.DuckDBPyConnection, Path], None]

MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (
        1,
        "initial schema",
        [
            """CREATE TABLE documents (
                id VARCHAR PRIMARY KEY,
                text VARCHAR NOT NULL,
                text_hash VARCHAR NOT NULL,
                split VARCHAR NOT NULL CHECK (split IN ('pool', 'val', 'test')),
                source VARCHAR NOT NULL CHECK (source IN ('imported', 'synthetic')),
                meta JSON,
                import_id INTEGER,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE UNIQUE INDEX documents_text_hash ON documents (text_hash)",
            """CREATE TABLE gold (
                doc_id VARCHAR PRIMARY KEY,
                label VARCHAR NOT NULL
            )""",
            "CREATE SEQUENCE labels_id_seq",
            # History is kept: a newer row for the same document supersedes, nothing is overwritten.
            """CREATE TABLE labels (
                id BIGINT PRIMARY KEY DEFAULT nextval('labels_id_seq'),
                doc_id VARCHAR NOT NULL,
                label VARCHAR NOT NULL,
                source VARCHAR NOT NULL CHECK (source IN ('teacher', 'human')),
                confidence DOUBLE,
                probs JSON,
                run_id INTEGER,
                round INTEGER,
                annotator VARCHAR,
                teacher_call_id BIGINT,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE INDEX labels_doc ON labels (doc_id)",
            "CREATE SEQUENCE teacher_calls_id_seq",
            # The ledger and the cache: a request whose hash is here is never sent again.
            """CREATE TABLE teacher_calls (
                id BIGINT PRIMARY KEY DEFAULT nextval('teacher_calls_id_seq'),
                request_hash VARCHAR NOT NULL,
                doc_id VARCHAR,
                run_id INTEGER,
                model VARCHAR NOT NULL,
                prompt JSON,
                response VARCHAR,
                parsed_label VARCHAR,
                confidence DOUBLE,
                probs JSON,
                tokens_in INTEGER,
                tokens_out INTEGER,
                cost_usd DOUBLE NOT NULL DEFAULT 0,
                latency_s DOUBLE,
                error VARCHAR,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE INDEX teacher_calls_hash ON teacher_calls (request_hash)",
            """CREATE TABLE embeddings (
                doc_id VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                vector FLOAT[] NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (doc_id, model)
            )""",
            "CREATE SEQUENCE runs_id_seq",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY DEFAULT nextval('runs_id_seq'),
                config JSON NOT NULL,
                status VARCHAR NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'cancelled')),
                simulated BOOLEAN NOT NULL DEFAULT false,
                best_round INTEGER,
                stop_reason VARCHAR,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
                finished_at TIMESTAMP
            )""",
            """CREATE TABLE rounds (
                run_id INTEGER NOT NULL,
                round INTEGER NOT NULL,
                -- 'selected' once the batch is chosen and saved, 'done' once its student is evaluated: a resumed
                -- run redoes only the steps after the last one saved.
                phase VARCHAR NOT NULL CHECK (phase IN ('selected', 'done')),
                selector VARCHAR,
                selected JSON,
                scored BIGINT,
                selector_state JSON,
                n_labels INTEGER,
                cost_usd DOUBLE,
                metrics JSON,
                timings JSON,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (run_id, round)
            )""",
            "CREATE SEQUENCE students_id_seq",
            """CREATE TABLE students (
                id INTEGER PRIMARY KEY DEFAULT nextval('students_id_seq'),
                run_id INTEGER,
                round INTEGER,
                kind VARCHAR NOT NULL,
                params JSON,
                metrics JSON,
                artifact_path VARCHAR,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE SEQUENCE imports_id_seq",
            """CREATE TABLE imports (
                id INTEGER PRIMARY KEY DEFAULT nextval('imports_id_seq'),
                source VARCHAR NOT NULL,
                rows_read BIGINT NOT NULL,
                rows_imported BIGINT NOT NULL,
                duplicates_dropped BIGINT NOT NULL,
                empty_dropped BIGINT NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
        ],
    ),
    (
        2,
        "teacher calls: transient failures, attempts, purpose (label or generate)",
        [
            # A transient failure (timeout, 429, 5xx) is kept for the audit but is never a cache hit.
            "ALTER TABLE teacher_calls ADD COLUMN transient BOOLEAN DEFAULT false",
            "ALTER TABLE teacher_calls ADD COLUMN attempts INTEGER DEFAULT 1",
            "ALTER TABLE teacher_calls ADD COLUMN purpose VARCHAR DEFAULT 'label'",
            "UPDATE teacher_calls SET transient = false, attempts = 1, purpose = 'label'",
        ],
    ),
    (
        3,
        "human review: when a label was given and which review annotation it came from; review projects",
        [
            "ALTER TABLE labels ADD COLUMN annotated_at TIMESTAMP",
            # The review backend's own id of the annotation, so that pulling again adds nothing twice.
            "ALTER TABLE labels ADD COLUMN review_ref VARCHAR",
            """CREATE TABLE review_projects (
                backend VARCHAR NOT NULL,
                location VARCHAR NOT NULL,
                external_id VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (backend, location)
            )""",
        ],
    ),
    (
        4,
        "teacher calls: retries by cause and unusable answers with their cost; triage ignores",
        [
            "ALTER TABLE teacher_calls ADD COLUMN retries JSON",
            "ALTER TABLE teacher_calls ADD COLUMN unusable INTEGER DEFAULT 0",
            "ALTER TABLE teacher_calls ADD COLUMN unusable_usd DOUBLE DEFAULT 0",
            "UPDATE teacher_calls SET unusable = 0, unusable_usd = 0",
            # A document a person chose not to label in Triage (Prodigy's ignore): it leaves their queue, and the
            # undo takes it back.
            "CREATE SEQUENCE ignored_id_seq",
            """CREATE TABLE ignored (
                id INTEGER PRIMARY KEY DEFAULT nextval('ignored_id_seq'),
                doc_id VARCHAR NOT NULL,
                annotator VARCHAR,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
        ],
    ),
    (
        5,
        "the check split: a random sample people label to grade students and teachers, never trained on",
        [
            # DuckDB cannot alter a CHECK constraint: the table is rebuilt with the new split allowed, its index
            # dropped first (a table with an index cannot be renamed) and made again.
            "DROP INDEX documents_text_hash",
            "ALTER TABLE documents RENAME TO documents_v4",
            """CREATE TABLE documents (
                id VARCHAR PRIMARY KEY,
                text VARCHAR NOT NULL,
                text_hash VARCHAR NOT NULL,
                split VARCHAR NOT NULL CHECK (split IN ('pool', 'val', 'test', 'check')),
                source VARCHAR NOT NULL CHECK (source IN ('imported', 'synthetic')),
                meta JSON,
                import_id INTEGER,
                created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
            )""",
            "INSERT INTO documents SELECT id, text, text_hash, split, source, meta, import_id, created_at "
            "FROM documents_v4",
            "DROP TABLE documents_v4",
            "CREATE UNIQUE INDEX documents_text_hash ON documents (text_hash)",
        ],
    ),
    (
        6,
        "vectors leave DuckDB for memory-mappable shards on disk; DuckDB keeps each document's row in them",
        [
            *CREATE_TABLES,
            move_embeddings_to_shards,
            "DROP TABLE embeddings",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
