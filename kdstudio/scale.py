"""Embedding, pool scoring and prediction on an engine (a cluster) instead of in this process. DuckDB writes the
work as Parquet shards, the engine's workers write one output shard per input shard, and the results come back by
key, each exactly once, or the job says which rows are missing."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kdstudio.config import DUCKDB_MEMORY_EMBED, duckdb_memory
from kdstudio.embeddings import BuildProgress, EmbedReport, ProgressFn
from kdstudio.engine import Engine, ShardTask, column_matrix, vectors_column
from kdstudio.errors import KdError
from kdstudio.free_rows import FreeRows
from kdstudio.interfaces import Encoder, Student
from kdstudio.jobs import EmbedJob, PredictJob, ScoreJob, TopUncertainJob
from kdstudio.store import Store
from kdstudio.store.shards import export_missing_texts, export_pool_texts, export_rows, load_embeddings
from kdstudio.uncertainty import TopUncertain


def _clean(work: Path, empty_parents: int) -> None:
    """Remove a job's folder, and the folders above it that it leaves empty (the project keeps no `work/`)."""
    shutil.rmtree(work, ignore_errors=True)
    for parent in list(work.parents)[:empty_parents]:
        try:
            parent.rmdir()
        except OSError:
            break


def _tasks(shards: Sequence[tuple[Path, int]], out_dir: Path) -> list[ShardTask]:
    return [ShardTask(str(path), str(out_dir / path.name), rows) for path, rows in shards]


def _progress(on_progress: ProgressFn | None, total: int):
    done = 0

    def step(rows: int) -> None:
        nonlocal done
        done += rows
        if on_progress:
            on_progress(done, total)

    return step


def _readable(files: Sequence[Path]) -> list[Path]:
    """Output shards that a previous, interrupted job finished (written atomically, so each is whole)."""
    good = []
    for path in files:
        try:
            pq.read_metadata(path)
        except Exception:
            continue
        good.append(path)
    return good


def require_outputs(tasks: Sequence[ShardTask]) -> None:
    """Every task wrote its output shard (each is written whole, or not at all), or one line says how many did not."""
    missing_files = [t.target for t in tasks if not Path(t.target).is_file()]
    if missing_files:
        raise KdError(f"the engine finished without writing {len(missing_files)} of {len(tasks)} output shards "
                      f"(first: {missing_files[0]})", "run the command again: finished shards are kept")


def read_outputs(tasks: Sequence[ShardTask], key: str, columns: Sequence[str]) -> pa.Table:
    """Every task's output, checked: each input row must come back exactly once."""
    require_outputs(tasks)
    table = pa.concat_tables([pq.read_table(t.target, columns=[key, *columns]) for t in tasks]) if tasks else None
    expected = sum(t.rows for t in tasks)
    if table is None:
        return pa.table({key: pa.array([], pa.string())})
    distinct = len(pc.unique(table.column(key)))
    if table.num_rows != expected or distinct != expected:
        raise KdError(f"the engine returned {table.num_rows} rows ({distinct} distinct) for {expected} inputs",
                      "run the command again")
    return table


# -- embedding -----------------------------------------------------------------------------------------------------

def embed_with(engine: Engine, store: Store, encoder: Encoder, work: Path,
               on_progress: ProgressFn | None = None, on_build: BuildProgress | None = None,
               vector_type: str = "float32") -> EmbedReport:
    """Embed every document that lacks a vector on `engine`. Output shards that an interrupted run finished are
    loaded first, so a killed job pays only for the shards it had not finished."""
    model = encoder.key
    recovered = load_embeddings(store, model, _readable(sorted((work / "out").glob("*.parquet"))), vector_type) \
        if (work / "out").is_dir() else 0
    shutil.rmtree(work, ignore_errors=True)
    already = store.embedding_count(model)
    started = time.perf_counter()
    # Counted first: listing what is missing joins the whole corpus, and a run's start asks when nothing is.
    shards = export_missing_texts(store, model, work / "in", engine.shard_rows) \
        if store.count_missing_embedding(model) else []
    tasks = _tasks(shards, work / "out")
    total = sum(t.rows for t in tasks)
    if tasks:
        encoder.load(on_build)  # an encoder built on first use is built here once, not by every worker
        if on_progress:
            on_progress(0, total)
        job = EmbedJob(type(encoder), encoder.model, encoder.max_length, encoder.batch_size,
                       {o.name: getattr(encoder, o.name) for o in encoder.options})
        engine.map_shards(job, tasks, _progress(on_progress, total))
        read_outputs(tasks, job.key, [])  # every row came back exactly once, or this raises
        load_embeddings(store, model, [Path(t.target) for t in tasks], vector_type)
    _clean(work, empty_parents=1)
    return EmbedReport(model, total + recovered, already - recovered, time.perf_counter() - started)


# -- pool scoring (inside the distillation loop) -------------------------------------------------------------------

class PoolScorer:
    """The student's work over the pool, on `engine`: the most uncertain documents as a shard job over shards
    exported once per run (each worker returns its shards' top candidates, never their scores), or candidate chunks
    streamed to the workers (M-RARU, and anything else that reads scores). `pool_rows` gives the pool's rows of the
    vector shards in row order (the run's pool mask): all an embeddings student's workers need to read."""

    def __init__(self, engine: Engine, store: Store, embedding_model: str, student_input: str, work: Path,
                 pool_rows: Callable[[], np.ndarray | FreeRows]) -> None:
        self.engine = engine
        self.store = store
        self.embedding_model = embedding_model
        self.student_input = student_input
        self.work = work
        self.pool_rows = pool_rows
        self._pool_shards: list[tuple[Path, int]] | None = None
        self._job: tuple[int, ScoreJob] | None = None

    def job(self, student: Student, round_no: int) -> ScoreJob:
        """The round's student, saved where the workers can load it."""
        if self._job is None or self._job[0] != round_no:
            directory = self.work / f"student-{round_no}"
            shutil.rmtree(directory, ignore_errors=True)
            student.save(directory)
            shards = self.store.vector_shards(self.embedding_model)
            self._job = (round_no, ScoreJob(type(student), str(directory), self.student_input,
                                            str(shards.directory.resolve()) if shards is not None else ""))
        return self._job[1]

    def top_uncertain(self, student: Student, round_no: int, measure: str, k: int, salt: int,
                      exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k most uncertain pool documents but the `exclude`d, as (vector shard rows, uncertainty), most
        uncertain first: exactly what ranking every pool document at once with the same salt gives."""
        if self._pool_shards is None:
            self._pool_shards = self._export_pool()
        out_dir = self.work / f"top-{round_no}"
        shutil.rmtree(out_dir, ignore_errors=True)
        tasks = _tasks(self._pool_shards, out_dir)
        base = self.job(student, round_no)
        job = TopUncertainJob(base.student_cls, base.directory, base.input, base.vectors_dir, measure=measure, k=k,
                              salt=salt, exclude=tuple(sorted(int(r) for r in exclude)))
        self.engine.map_shards(job, tasks)
        require_outputs(tasks)
        best = TopUncertain(k, salt)
        for task in tasks:  # a shard's candidates at a time: the driver holds k of them, not the pool
            table = pq.read_table(task.target, columns=["row", "uncertainty", "keyed"])
            best.add_keyed(table.column("row").to_numpy(), table.column("uncertainty").to_numpy(),
                           table.column("keyed").to_numpy())
        shutil.rmtree(out_dir, ignore_errors=True)
        rows, scores, _ = best.best()
        return rows, scores

    def _export_pool(self) -> list[tuple[Path, int]]:
        """The pool as the workers read it, written once a run."""
        if self.student_input == "embeddings":  # rows from the run's own mask: no query over the corpus at all
            return export_rows(self.pool_rows(), self.work / "pool", self.engine.shard_rows)
        # Texts in length order: a sort of the pool's texts in DuckDB, given the room an embedding's hand-off gets.
        with self.store.memory_limit(duckdb_memory(DUCKDB_MEMORY_EMBED)):
            return export_pool_texts(self.store, self.embedding_model, self.work / "pool", self.engine.shard_rows)

    def score_stream(self, student: Student, round_no: int, chunks: Iterator[tuple[np.ndarray, pa.Table]]
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, probabilities) for each chunk in order; the engine works ahead while the caller decides."""
        job = self.job(student, round_no)
        pending: list[np.ndarray] = []

        def batches() -> Iterator[pa.Table]:
            for positions, table in chunks:
                pending.append(positions)
                yield table

        for out in self.engine.stream(job, batches()):
            yield pending.pop(0), column_matrix(out.column("probs"))

    def close(self) -> None:
        _clean(self.work, empty_parents=2)


def features_table(ids: list[str], features: Any, student_input: str) -> pa.Table:
    column = vectors_column(features) if student_input == "embeddings" else pa.array(features, pa.string())
    return pa.table({"id": pa.array(ids, pa.string()), "vector" if student_input == "embeddings" else "text": column})


# -- prediction with an exported model -----------------------------------------------------------------------------

def predict_with(engine: Engine, model_dir: Path, texts: Sequence[str], work: Path, n_labels: int) -> np.ndarray:
    """(n, n_labels) probabilities from an exported model folder, computed on `engine`, in the order given."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # length-sorted shards, as for embedding
    shards = []
    for number, start in enumerate(range(0, len(texts), engine.shard_rows)):
        rows = order[start:start + engine.shard_rows]
        path = work / "in" / f"part-{number:06d}.parquet"
        pq.write_table(pa.table({"row": pa.array(rows, pa.int64()),
                                 "text": pa.array([texts[i] for i in rows], pa.string())}), path)
        shards.append((path, len(rows)))
    tasks = _tasks(shards, work / "out")
    try:
        job = PredictJob(str(Path(model_dir).resolve()))
        engine.map_shards(job, tasks)
        table = read_outputs(tasks, job.key, ["probs"])
        probs = np.zeros((len(texts), n_labels), dtype=np.float32)
        if table.num_rows:
            probs[table.column("row").to_numpy()] = column_matrix(table.column("probs"))
        return probs
    finally:
        shutil.rmtree(work, ignore_errors=True)
