from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from conftest import LABELS, run_cli

from kdstudio.config import CONFIG_NAME, Label, ProjectConfig, read_labels_file
from kdstudio.errors import ConfigError, ProjectLocked, ProjectNotFound, SchemaError
from kdstudio.project import Project
from kdstudio.store import DB_NAME, Store
from kdstudio.store import schema as schema_module

TABLES = {"documents", "gold", "labels", "teacher_calls", "vector_sets", "vector_rows", "runs", "rounds", "students",
          "imports", "review_projects", "ignored",
          "schema_version"}


def test_init_creates_database_and_config(tmp_path: Path):
    with Project.init(tmp_path / "p", [Label("a", "first"), Label("b")]) as project:
        assert set(project.store.table_names()) == TABLES
        assert project.store.schema_version() == schema_module.LATEST_VERSION
    assert (tmp_path / "p" / DB_NAME).is_file()
    config = ProjectConfig.load(tmp_path / "p")
    assert config.labels == [Label("a", "first"), Label("b")]
    assert config.embedding.model == "all-MiniLM-L6-v2"


def test_init_refuses_an_existing_project_and_bad_label_sets(tmp_path: Path):
    Project.init(tmp_path / "p", [Label("a"), Label("b")]).close()
    with pytest.raises(ConfigError, match="already holds"):
        Project.init(tmp_path / "p", [Label("a"), Label("b")])
    with pytest.raises(ConfigError, match="twice"):
        Project.init(tmp_path / "q", [Label("a"), Label("a")])
    with pytest.raises(ConfigError, match="at least two"):
        Project.init(tmp_path / "r", [Label("a")])
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()


def test_labels_file_formats(tmp_path: Path):
    text = tmp_path / "labels.txt"
    text.write_text("# topics\nsports: games and athletes\n\npolitics\n", encoding="utf-8")
    assert read_labels_file(text) == [Label("sports", "games and athletes"), Label("politics")]
    js = tmp_path / "labels.json"
    js.write_text('{"spam": "unwanted mail", "ham": ""}', encoding="utf-8")
    assert read_labels_file(js) == [Label("spam", "unwanted mail"), Label("ham")]


def test_open_missing_project_says_how_to_create_one(tmp_path: Path):
    with pytest.raises(ProjectNotFound, match="kdstudio init"):
        Project.open(tmp_path)


def test_migrations_run_forward_and_keep_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / DB_NAME
    store = Store.create(path)
    store.con.execute("INSERT INTO documents (id, text, text_hash, split, source) VALUES ('d1', 'x', 'h', 'pool', "
                      "'imported')")
    store.close()
    nxt = schema_module.LATEST_VERSION + 1
    extra = (nxt, "add a note column", ["ALTER TABLE documents ADD COLUMN note VARCHAR"])
    monkeypatch.setattr(schema_module, "MIGRATIONS", [*schema_module.MIGRATIONS, extra])
    monkeypatch.setattr("kdstudio.store.store.MIGRATIONS", schema_module.MIGRATIONS)
    monkeypatch.setattr("kdstudio.store.store.LATEST_VERSION", nxt)
    store = Store.open(path)
    assert store.schema_version() == nxt
    assert store.con.execute("SELECT id, note FROM documents").fetchall() == [("d1", None)]
    assert store.migrate() == []  # nothing left to apply
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / DB_NAME
    Store.create(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version, description) VALUES (99, 'from the future')")
    con.close()
    with pytest.raises(SchemaError, match="newer than this kdstudio"):
        Store.open(path)


@pytest.fixture
def held_project(tmp_path: Path):
    """A second process that holds the project open for writing."""
    Project.init(tmp_path / "p", [Label(n) for n in LABELS]).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from kdstudio.project import Project
            p = Project.open({str(tmp_path / 'p')!r})
            print('ready', flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    yield tmp_path / "p", holder.pid
    holder.stdin.close()
    holder.wait(timeout=30)


def test_second_writer_gets_a_clear_lock_error(held_project):
    directory, pid = held_project
    with pytest.raises(ProjectLocked) as info:
        Project.open(directory)
    assert f"process {pid}" in str(info.value)
    assert "lock" in str(info.value)


def test_second_writer_on_the_command_line_sees_no_traceback(held_project):
    directory, pid = held_project
    result = run_cli("status", "-p", str(directory))
    assert result.returncode == 1
    assert f"project is open in process {pid}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_is_human_editable(tmp_path: Path):
    Project.init(tmp_path / "p", [Label("a"), Label("b")]).close()
    text = (tmp_path / "p" / CONFIG_NAME).read_text(encoding="utf-8")
    assert '[[labels]]\nname = "a"' in text


def test_a_version_1_ledger_is_migrated_in_place(tmp_path: Path):
    path = tmp_path / DB_NAME
    store = Store._connect(path)
    store.migrate(target=1)
    store.con.execute("INSERT INTO teacher_calls (request_hash, model, parsed_label) VALUES ('h', 'm', 'a')")
    store.close()
    store = Store.open(path)
    assert store.schema_version() == schema_module.LATEST_VERSION
    assert store.con.execute("SELECT request_hash, parsed_label, transient, attempts, purpose "
                             "FROM teacher_calls").fetchall() == [("h", "a", False, 1, "label")]
    store.close()


def test_a_models_vectors_load_a_batch_at_a_time_into_one_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import numpy as np
    from conftest import cheap_slice

    from kdstudio.store import store as store_module

    with Project.open(cheap_slice(tmp_path / "bbc", limit=60, seed=2)) as project:
        whole_ids, whole = project.store.embedding_matrix(project.vector_key)
        monkeypatch.setattr(store_module, "READ_BATCH", 7)  # 60 documents: nine batches, the last one short
        ids, matrix = project.store.embedding_matrix(project.vector_key)
        assert ids == whole_ids == sorted(ids) and len(ids) == 60 and matrix.dtype == np.float32
        np.testing.assert_array_equal(matrix, whole)
        np.testing.assert_array_equal(matrix, project.store.vectors(project.vector_key, ids))
        none_ids, none = project.store.embedding_matrix("no such model")
        assert none_ids == [] and none.shape == (0, 0)
