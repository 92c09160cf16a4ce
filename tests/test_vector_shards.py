"""Vectors on disk (issue 29): blocks of raw rows addressed by integer, their owners in DuckDB, the move of an older
project's vectors out of DuckDB, and runs that are the same either way."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_ENCODER, as_before_vector_shards, cheap_slice, cli, fresh_copy

from kdstudio.errors import ConfigError, KdError
from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.store import DB_NAME, Store
from kdstudio.store.vector_shards import META_NAME, VectorShards
from kdstudio.vector_index import VectorIndex


def test_rows_cross_blocks_and_come_back_in_the_order_asked(tmp_path: Path):
    shards = VectorShards.create(tmp_path / "v", dim=3, block_rows=4)
    matrix = np.arange(30, dtype=np.float32).reshape(10, 3)
    shards.write(0, matrix[:3])
    shards.write(3, matrix[3:])  # the second write starts inside block 0 and ends in block 2
    assert sorted(p.name for p in (tmp_path / "v").glob("block-*")) == [
        "block-000000.float32", "block-000001.float32", "block-000002.float32"]
    again = VectorShards.open(tmp_path / "v")
    assert again == shards
    np.testing.assert_array_equal(again.read(np.array([9, 0, 4, 4, 7])), matrix[[9, 0, 4, 4, 7]])
    np.testing.assert_array_equal(again.read_range(2, 9), matrix[2:9])
    assert again.read(np.array([], dtype=np.int64)).shape == (0, 3)
    assert again.disk_bytes() == 10 * 3 * 4


def test_float16_is_recorded_and_read_back_as_float32(tmp_path: Path):
    shards = VectorShards.create(tmp_path / "v", dim=2, dtype="float16")
    shards.write(0, np.array([[0.5, -1.25], [3.0, 0.1]], dtype=np.float32))
    read = VectorShards.open(tmp_path / "v").read(np.array([1, 0]))
    assert read.dtype == np.float32 and shards.disk_bytes() == 2 * 2 * 2
    np.testing.assert_allclose(read, [[3.0, 0.1], [0.5, -1.25]], atol=1e-3)
    with pytest.raises(KdError, match="unknown vector type"):
        VectorShards.create(tmp_path / "w", dim=2, dtype="float64")


@pytest.mark.parametrize("meta", [None, b"\x00\xff", b"[1, 2]", b'{"format": 1, "dim": "3\\u001b[31m", "dtype": '
                                                                  b'"float32", "block_rows": 4}',
                                  b'{"format": 2, "dim": 3, "dtype": "float32", "block_rows": 4}'])
def test_a_damaged_header_is_one_clear_error(tmp_path: Path, meta: bytes | None):
    VectorShards.create(tmp_path / "v", dim=3)
    if meta is None:
        (tmp_path / "v" / META_NAME).unlink()
    else:
        (tmp_path / "v" / META_NAME).write_bytes(meta)
    with pytest.raises(KdError, match=r"vector shards in .* are damaged") as caught:
        VectorShards.open(tmp_path / "v")
    assert "\x1b" not in str(caught.value)


def test_a_short_or_missing_block_is_refused_not_read_as_zeros(tmp_path: Path):
    shards = VectorShards.create(tmp_path / "v", dim=3, block_rows=4)
    shards.write(0, np.ones((6, 3), dtype=np.float32))
    with pytest.raises(KdError, match="shorter than recorded"):
        shards.read(np.array([0, 7]))
    with pytest.raises(KdError, match="shorter than recorded"):
        shards.read_range(0, 8)
    shards.block_path(1).unlink()
    with pytest.raises(KdError, match=r"block-000001\.float32 is missing"):
        shards.read(np.array([5]))


def test_rows_scattered_over_large_blocks_are_read_one_at_a_time_the_same(tmp_path: Path):
    """A few rows of a large block are read by position, not mapped (a mapping's fault reads the disk's whole
    read-ahead window): the same values, in the order asked, float16 too, and a short or missing block refused."""
    for dtype in ("float32", "float16"):
        shards = VectorShards.create(tmp_path / dtype, dim=5, dtype=dtype, block_rows=1000)
        matrix = np.random.default_rng(0).standard_normal((2500, 5)).astype(np.float32)
        shards.write(0, matrix)
        rows = np.array([2499, 3, 1500, 3, 999, 1000])  # one to three rows a block: fewer than 1 in 64
        expected = matrix[rows].astype(dtype).astype(np.float32)
        np.testing.assert_array_equal(shards.read(rows), expected)
        dense = np.arange(0, 1000, 2)  # half of block 0: mapped
        np.testing.assert_array_equal(shards.read(dense), matrix[dense].astype(dtype).astype(np.float32))
    with open(shards.block_path(2), "r+b") as f:
        f.truncate(10 * shards.row_bytes)
    with pytest.raises(KdError, match=r"block-000002\.float16 is shorter than recorded"):
        shards.read(np.array([0, 2400]))
    shards.block_path(1).unlink()
    with pytest.raises(KdError, match=r"block-000001\.float16 is missing"):
        shards.read(np.array([1500]))


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("shards") / "bbc", limit=120, seed=3)


def test_a_document_keeps_its_first_vector_and_an_uncommitted_write_is_written_over(sliced: Path, tmp_path: Path):
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        store, key = project.store, "another model"
        ids = project.store.ids_in_split("pool")[:5]
        first = np.arange(15, dtype=np.float32).reshape(5, 3)
        store.save_embeddings(key, [ids[0], ids[1], ids[0], "no such document"], first[[0, 1, 2, 3]])
        assert store.embedding_count(key) == 2
        np.testing.assert_array_equal(store.vectors(key, [ids[1], ids[0]]), first[[1, 0]])
        with pytest.raises(RuntimeError), store.transaction():  # killed between the shard write and the commit
            store.save_embeddings(key, ids[2:4], np.full((2, 3), 99, dtype=np.float32))
            raise RuntimeError("killed")
        assert store.embedding_count(key) == 2 and store.ids_missing_embedding(key)[:0] == []
        store.save_embeddings(key, ids[2:5], first[2:5])  # takes rows 2-4, over the rows nobody owns
        assert store.vector_rows(key, ids).tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(store.vectors(key, ids), first)
        with pytest.raises(KdError, match="dimension 4 cannot join a set of dimension 3"):
            store.save_embeddings(key, ids[4:] + project.store.ids_in_split("val")[:1], np.ones((2, 4)))
        assert (key, 5, 3) in store.embedding_coverage()
        # Counted as a difference (no join over the corpus): right because no vector is stored for an unknown id.
        assert store.count_missing_embedding(key) == len(store.ids_missing_embedding(key)) == \
            store.con.execute("SELECT count(*) FROM documents").fetchall()[0][0] - 5
        assert not list(project.directory.glob("**/*.parquet"))


def test_the_index_reads_rows_it_is_asked_for_and_appends_generated_ones(sliced: Path, tmp_path: Path):
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        store, key = project.store, project.vector_key
        index = VectorIndex.from_store(store, key)
        ids, matrix = store.embedding_matrix(key)  # in id order
        shard = dict(zip(ids, store.vector_rows(key, ids).tolist(), strict=True))
        by_row = sorted(ids, key=shard.get)
        assert by_row != ids  # embedded longest first: shard order is not id order, and the index keeps to it
        assert len(index) == len(ids) and index.dim == matrix.shape[1]
        assert index.ids_at(np.array([3, 0, 3])) == [by_row[3], by_row[0], by_row[3]]  # a row is a shard row
        assert index.rows([ids[7], ids[2]]).tolist() == [shard[ids[7]], shard[ids[2]]]
        index.mark_pool()
        pool = store.ids_in_split("pool", source="imported")
        assert index.ids_at(np.flatnonzero(index.pool[:])) == sorted(pool, key=shard.get)
        first = sorted(shard[d] for d in pool)[:2]
        assert index.free_rows({by_row[first[1]], "zzz"})[:].tolist()[0] == first[0]
        assert first[1] not in index.free_rows({by_row[first[1]]})[:].tolist()
        np.testing.assert_array_equal(index.vectors([ids[5], ids[0]]), matrix[[5, 0]])
        np.testing.assert_array_equal(index.vectors_at(np.array([shard[ids[5]], shard[ids[0]]])), matrix[[5, 0]])
        assert index.known([ids[1], "zzz"]) == {ids[1]} and index.missing(["zzz", ids[1]]) == ["zzz"]
        made = ["generated one", "generated two"]
        store.con.executemany("INSERT INTO documents (id, text, text_hash, split, source) VALUES "
                              "(?, ?, ?, 'pool', 'synthetic')", [(d, d, d) for d in made])
        store.save_embeddings(key, made, np.full((2, matrix.shape[1]), 7, dtype=np.float32))
        assert index.known(made) == set()  # stored after the index was read: not the run's until appended
        index.append(store.vector_rows(key, [*made, ids[0]]))  # a known document is kept where it is
        assert len(index) == len(ids) + 2 and index.ids_at(np.array([len(ids) + 1])) == ["generated two"]
        np.testing.assert_array_equal(index.vectors(["generated one", ids[0]])[:, 0], [7, matrix[0, 0]])
        assert not index.pool[len(ids):].any()  # generated rows are never in the pool
        assert index.vectors([]).shape == (0, matrix.shape[1])
        rng = np.random.default_rng(4)
        in_row_order = sorted(pool, key=shard.get)
        assert index.pool_sample(10, np.random.default_rng(4)) == \
            [in_row_order[i] for i in np.sort(rng.choice(len(pool), 10, replace=False))]


def test_the_index_keeps_what_it_reads_by_id_up_to_its_limit(sliced: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    """Documents asked for by id (labelled, validation, test) are read from the shards once; pool candidates, read by
    row, and anything past the limit are read each time."""
    import kdstudio.vector_index as vector_index

    monkeypatch.setattr(vector_index, "KEPT_VECTORS", 3)
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        index = VectorIndex.from_store(project.store, project.vector_key)
        ids, matrix = project.store.embedding_matrix(project.vector_key)
        read: list[int] = []
        shards_read = index._read
        monkeypatch.setattr(index, "_read", lambda rows: read.append(len(rows)) or shards_read(rows))
        np.testing.assert_array_equal(index.vectors([ids[4], ids[1], ids[4]]), matrix[[4, 1, 4]])
        np.testing.assert_array_equal(index.vectors([ids[1], ids[4]]), matrix[[1, 4]])
        assert read == [3]  # the second asks nothing of the shards
        np.testing.assert_array_equal(index.vectors([ids[9], ids[8], ids[1]]), matrix[[9, 8, 1]])
        np.testing.assert_array_equal(index.vectors([ids[8]]), matrix[[8]])  # past the limit: read again
        row = index.rows([ids[4]])
        np.testing.assert_array_equal(index.vectors_at(row), matrix[[4]])  # by row: never kept
        assert read == [3, 2, 1, 1]

def run_selections(directory: Path, config: DistillConfig) -> tuple[list[list[str]], list[dict]]:
    with Project.open(directory) as project:
        run = project.distill(config)
        rounds = project.rounds(run.run_id)
        return [[s["id"] for s in r.selected] for r in rounds], [r.metrics for r in rounds]


def stored_again_in_id_order(directory: Path) -> None:
    """The project's vectors written to new shards in document-id order (a fresh embed writes longest first)."""
    with Project.open(directory) as project:
        store, key = project.store, project.vector_key
        ids, matrix = store.embedding_matrix(key)
        folder = store.con.execute("SELECT directory FROM vector_sets WHERE model = ?", [key]).fetchall()[0][0]
        store.con.execute("DELETE FROM vector_rows WHERE model = ?", [key])
        store.con.execute("DELETE FROM vector_sets WHERE model = ?", [key])
        shutil.rmtree(directory / folder)
        store.save_embeddings(key, ids, matrix)
        assert store.vector_rows(key, ids).tolist() == list(range(len(ids)))


@pytest.mark.parametrize("selector", ["margin", "mraru"])
def test_an_older_project_moves_its_vectors_to_shards_and_runs_exactly_as_a_new_one(sliced: Path, tmp_path: Path,
                                                                                   selector: str):
    """The old loop read vectors in document-id order; migrated, they lie in that order, and a run reads them in
    shard order: the same run as on a new project holding the same vectors in the same order."""
    new, old = fresh_copy(sliced, tmp_path / "new"), fresh_copy(sliced, tmp_path / "old")
    with Project.open(new) as project:
        expected_ids, expected = project.store.embedding_matrix(project.vector_key)
    stored_again_in_id_order(new)
    as_before_vector_shards(old)
    assert not (old / "vectors").exists()
    with Project.open(old) as project:  # migrated on open
        assert "embeddings" not in project.store.table_names()
        ids, matrix = project.store.embedding_matrix(project.vector_key)
        assert ids == expected_ids and project.store.vector_rows(project.vector_key, ids).tolist() == \
            list(range(len(ids)))  # written in id order, the order the old loop read in
        np.testing.assert_array_equal(matrix, expected)
    config = DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector=selector, seed_size=10,
                           batch=10, budget_labels=50, seed=5)
    assert run_selections(old, config) == run_selections(new, config)


def test_a_migration_killed_midway_leaves_the_old_project_whole(sliced: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    old = fresh_copy(sliced, tmp_path)
    as_before_vector_shards(old)
    from kdstudio.store import vector_sets

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(vector_sets.VectorShards, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        Store.open(old / DB_NAME)
    monkeypatch.undo()
    with Project.open(old) as project:
        assert project.store.embedding_count(project.vector_key) == 120


def test_a_damaged_shard_stops_a_run_with_one_line(sliced: Path, tmp_path: Path):
    directory = fresh_copy(sliced, tmp_path)
    block = next((directory / "vectors").glob("*/block-000000.*"))
    block.write_bytes(block.read_bytes()[:100])
    result = cli("distill", "-p", str(directory), "--teacher", "oracle", "--budget-labels", "20")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "vector shards in" in result.stderr and "are damaged" in result.stderr


def test_gold_is_read_when_asked_and_samples_as_the_sorted_list_does(sliced: Path, tmp_path: Path):
    from kdstudio.steps import slice_ids
    from kdstudio.store.gold_labels import GoldLabels

    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        everything = project.store.gold()
        gold = GoldLabels(project.store)
        assert len(gold) == len(everything) and list(gold) == sorted(everything)
        assert dict(gold.items()) == everything
        pool = project.store.ids_in_split("pool")[0]
        assert pool in gold and gold[pool] == everything[pool] and gold.get("zzz") is None and "zzz" not in gold
        with pytest.raises(KeyError):
            gold["zzz"]
        for limit in (5, 10_000):
            assert gold.sample(limit, np.random.default_rng(2)) == slice_ids(sorted(everything), limit,
                                                                              np.random.default_rng(2))
        project.store.con.execute("DELETE FROM gold WHERE doc_id IN (SELECT id FROM documents WHERE split = 'test' "
                                  "ORDER BY id LIMIT 3)")
        for split in ("val", "test"):
            every = project.store.ids_in_split(split)
            graded = project.store.ids_with_gold(split)
            assert len(graded) < len(every) if split == "test" else graded == every
            for limit in (None, 4, 10_000):
                rng, again = np.random.default_rng(3), np.random.default_rng(3)
                assert project.store.split_sample(split, limit, rng) == slice_ids(every, limit, again)
                assert project.store.split_sample(split, limit, rng, with_gold=True) == slice_ids(graded, limit, again)
        everything = project.store.gold()
        later = project.store.ids_in_split("pool")[1:4]
        gold.prefetch([*later, "yyy"])
        project.store.con.execute("DELETE FROM gold")  # read already: no further query is made for these
        assert [gold[d] for d in later] == [everything[d] for d in later] and "yyy" not in gold


def test_a_project_can_keep_its_vectors_in_float16(tmp_path: Path):
    directory = tmp_path / "bbc"
    project, _ = Project.from_dataset("bbc-news", directory, limit=60, seed=1)
    with project:
        project.config.embedding.vector_type = "float16"
        project.config.save(directory)
    reference = cheap_slice(tmp_path / "reference", limit=60, seed=1)
    with Project.open(directory) as project:
        project.embed(encoder=TEST_ENCODER)
        shards = project.store.vector_shards(project.vector_key)
        assert shards is not None and shards.dtype == "float16"
        _, half = project.store.embedding_matrix(project.vector_key)
        with Project.open(reference) as full:
            _, whole = full.store.embedding_matrix(full.vector_key)
        np.testing.assert_allclose(half, whole, atol=2e-3)
        assert shards.disk_bytes() == whole.size * 2
        assert project.distill(DistillConfig(teacher="oracle", budget_labels=20, seed_size=10, batch=10)).status \
            == "finished"
    (directory / "kdstudio.toml").write_text((directory / "kdstudio.toml").read_text().replace(
        'vector_type = "float16"', 'vector_type = "float8[31m"'))
    with pytest.raises(ConfigError, match="vector_type 'float8"):
        Project.open(directory)


def as_duckdb_shows(limit: str) -> str:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]


@pytest.mark.parametrize("given", [None, "300MB"])
def test_a_run_bounds_duckdbs_memory_and_gives_it_back(sliced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       given: str | None):
    from kdstudio import steps
    from kdstudio.config import DUCKDB_MEMORY_ENV, DUCKDB_MEMORY_RUN
    from kdstudio.memory_size import memory_bytes

    if given:
        monkeypatch.setenv(DUCKDB_MEMORY_ENV, given)
    seen: list[tuple[int, int]] = []  # (the limit, DuckDB's index blocks), in bytes
    select = steps.select

    def watching(ctx, state):
        shown = ctx.store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        held = ctx.store.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() "
                                     "WHERE tag = 'ART_INDEX'").fetchall()[0][0]
        seen.append((memory_bytes(shown), int(held)))
        return select(ctx, state)

    monkeypatch.setattr(steps, "select", watching)
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        before = project.store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        project.distill(DistillConfig(teacher="oracle", budget_labels=20, seed_size=10, batch=10))
        after = project.store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    base = memory_bytes(as_duckdb_shows(given or DUCKDB_MEMORY_RUN))
    # The base, widened by the index blocks writes loaded (Store.room_for_indexes), to within DuckDB's rounding.
    assert seen and all(base - 2**20 < limit <= base + held + 2**20 for limit, held in seen), (base, seen)
    assert after == before and memory_bytes(before) > base + 2**30


@pytest.mark.parametrize("given", ["lots", "1GB'; DROP TABLE documents; --", "12"])
def test_a_memory_limit_that_is_no_size_is_refused_in_one_line_before_anything_runs(sliced: Path, tmp_path: Path,
                                                                                     given: str):
    from kdstudio.config import DUCKDB_MEMORY_ENV

    directory = fresh_copy(sliced, tmp_path)
    result = cli("distill", "-p", str(directory), "--teacher", "oracle", "--budget-labels", "20",
                 env={DUCKDB_MEMORY_ENV: given})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"{DUCKDB_MEMORY_ENV} " in errors[0] and "is not a memory size" in errors[0]
    with Project.open(directory) as project:
        assert not project.runs() and project.store.pool_size() > 0


def test_duckdb_out_of_memory_is_one_line_that_does_not_call_the_file_damaged(sliced: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    import duckdb

    def short_of_memory(*_, **__):
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block of size 256.0 KiB")

    monkeypatch.setattr(Project, "distill", short_of_memory)
    result = cli("distill", "-p", str(fresh_copy(sliced, tmp_path)), "--teacher", "oracle", "--budget-labels", "20")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Out of Memory Error" in result.stderr and "free memory on this machine" in result.stderr
    assert "restore kdstudio.duckdb" not in result.stderr


def test_index_blocks_that_writes_load_widen_the_limit_instead_of_failing_the_run(sliced: Path, tmp_path: Path):
    """DuckDB never evicts the unique indexes' blocks a write loads: the run's limit grows by them, so that what it
    bounds stays the cache."""
    from kdstudio.memory_size import memory_bytes

    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        store = project.store
        store.room_for_indexes()  # outside a limit: nothing to widen
        assert store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] != "61.0 MiB"
        with store.memory_limit("64MB"):
            store.con.executemany("INSERT INTO documents (id, text, text_hash, split, source) VALUES "
                                  "(?, ?, ?, 'pool', 'synthetic')",
                                  [(f"made {i}", f"made {i}", f"h{i}") for i in range(50)])
            store.room_for_indexes()
            held = store.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() "
                                     "WHERE tag = 'ART_INDEX'").fetchall()[0][0]
            limit = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            assert held > 0 and as_duckdb_shows(f"{memory_bytes('64MB') + held}B") == limit
        assert as_duckdb_shows("64MB") != store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_few_shot_examples_are_drawn_without_reading_the_whole_pools_text_under_a_runs_limit(tmp_path: Path):
    """A corpus with gold on every pool document: the examples a teacher reads are chosen from ids and labels, and
    only theirs have their text read (reading every text ran a 20newsgroups run out of its 64 MB after many runs)."""
    from types import SimpleNamespace

    from kdstudio import steps
    from kdstudio.config import Label
    from kdstudio.store import Ledger

    with Project.init(tmp_path / "p", [Label("a"), Label("b")]) as project:
        store = project.store
        # 80 MB of text, 4 KB a document
        store.con.execute("INSERT INTO documents (id, text, text_hash, split, source) SELECT printf('d%05d', i), "
                          "i::VARCHAR || ' ' || repeat('word ', 800), 'h' || i, 'pool', 'imported' "
                          "FROM range(20000) t(i)")
        store.con.execute("INSERT INTO gold SELECT printf('d%05d', i), CASE WHEN i % 3 = 0 THEN 'a' ELSE 'b' END "
                          "FROM range(20000) t(i)")
        store.con.execute("CHECKPOINT")
        teacher = SimpleNamespace(examples_wanted=200, examples_per_document=False, simulated=False)
        with store.memory_limit("64MB"):
            examples = steps.teach_context(Ledger(store), teacher, 0, ["a", "b"], {}, {}).examples
    assert len(examples) == 200 and {label for _, _, label in examples} == {"a", "b"}
    assert sum(label == "a" for _, _, label in examples) == 100  # round-robin over the classes
    for doc_id, text, label in examples:
        i = int(doc_id[1:])
        assert text.startswith(f"{i} word") and label == ("a" if i % 3 == 0 else "b")
