"""The core's shard path, engine-agnostic: an in-process engine stands in for a cluster, so that a driver killed
mid-job and an engine that returns rows twice can be staged exactly (on the test encoder: the path is the same for
any encoder, and the real one on a real cluster is tests/test_ray.py's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TEST_ENCODER, fresh_copy, unembedded_slice

from kdstudio.engine import Engine, ShardJob, ShardTask, run_shard
from kdstudio.errors import KdError
from kdstudio.project import Project


class SerialEngine(Engine):
    """Runs each shard in this process, in order; can die after some shards, or write a shard's rows twice."""

    name = "serial"
    shard_rows = 16

    def __init__(self, die_after: int | None = None, doubled: bool = False) -> None:
        super().__init__()
        self.die_after = die_after
        self.doubled = doubled
        self.sent: list[str] = []

    def map_shards(self, job: ShardJob, tasks: Sequence[ShardTask],
                   on_progress: Callable[[int], None] | None = None) -> None:
        fn = job.open("cpu")
        for number, task in enumerate(tasks):
            if number == self.die_after:
                raise KeyboardInterrupt  # the driver is killed here
            self.sent.append(task.source)
            rows = run_shard(fn, job, task)
            if self.doubled:
                table = pq.read_table(task.target)
                pq.write_table(pa.concat_tables([table, table]), task.target)
            if on_progress:
                on_progress(rows)

    def stream(self, job: ShardJob, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        fn = job.open("cpu")
        for batch in batches:
            yield fn(batch)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return unembedded_slice(tmp_path_factory.mktemp("shards"), limit=80, seed=5, encoder=TEST_ENCODER)


def test_a_killed_driver_keeps_finished_shards_and_the_next_run_sends_only_the_rest(corpus: dict, tmp_path: Path):
    directory = fresh_copy(corpus["project"], tmp_path)
    with Project.open(directory) as project, pytest.raises(KeyboardInterrupt):
        project.embed(engine=SerialEngine(die_after=3))
    assert len(list((directory / "work" / "embed" / "out").glob("*.parquet"))) == 3
    again = SerialEngine()
    with Project.open(directory) as project:
        assert project.store.embedding_count(corpus["key"]) == 0  # nothing was loaded before the kill
        report = project.embed(engine=again)
        ids, matrix = project.store.embedding_matrix(corpus["key"])
    assert len(again.sent) == 5 - 3  # 80 documents in shards of 16: the three finished ones are not sent again
    assert (report.embedded, report.already) == (80, 0)
    assert ids == corpus["ids"]
    np.testing.assert_allclose(matrix, corpus["vectors"], atol=1e-5)
    assert not (directory / "work").exists()


def test_rows_returned_twice_are_refused_and_nothing_is_stored(corpus: dict, tmp_path: Path):
    with Project.open(fresh_copy(corpus["project"], tmp_path)) as project:
        with pytest.raises(KdError, match=r"returned 160 rows \(80 distinct\) for 80 inputs"):
            project.embed(engine=SerialEngine(doubled=True))
        assert project.store.embedding_count(corpus["key"]) == 0


@pytest.mark.parametrize("selector", ["margin", "cluster-margin"])
def test_the_workers_rank_the_pool_and_the_driver_reads_their_candidates_only(
        corpus: dict, tmp_path: Path, selector: str, monkeypatch: pytest.MonkeyPatch):
    """Whole-pool uncertainty on an engine: each shard's top candidates come back, never the pool's probabilities,
    and the picks are the in-process run's, round after round."""
    from kdstudio import scale
    from kdstudio.loop import DistillConfig

    embedded = corpus["project"].parent / "local" / corpus["project"].name  # embedded in-process (conftest)
    config = DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector=selector, seed_size=10,
                           batch=10, budget_labels=40, seed=2)
    chosen = []
    read: list[tuple[int, tuple[str, ...]]] = []  # by the driver: what the workers wrote (their input is "pool")
    whole = scale.pq.read_table

    def read_table(path, columns=None, **kwargs):
        table = whole(path, columns=columns, **kwargs)
        if Path(path).parent.name != "pool":
            read.append((table.num_rows, tuple(table.column_names)))
        return table

    monkeypatch.setattr(scale.pq, "read_table", read_table)
    for engine in (None, SerialEngine()):
        with Project.open(fresh_copy(embedded, tmp_path / str(engine is None))) as project:
            run = project.distill(config, engine=engine)
            assert run.status == "finished"
            chosen.append([[s["id"] for s in r.selected] for r in project.rounds(run.run_id)])
    assert chosen[0] == chosen[1] and sum(map(len, chosen[0])) == 40
    wanted = 10 * (1 if selector == "margin" else 10)  # cluster-margin ranks 10 candidates a pick
    assert read and all(columns == ("row", "uncertainty", "keyed") for _, columns in read)
    assert max(rows for rows, _ in read) <= min(wanted, SerialEngine.shard_rows)
