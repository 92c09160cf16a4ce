"""The bulk work an engine distributes, as picklable jobs: embedding texts, scoring documents with a student, and
predicting with an exported model. A worker calls `job.open(device)` once (it loads the model) and the function it
returns on each batch; `run_shard` does one Parquet shard, the unit a cluster schedules and retries.

Shards hold a key column (`id`, or `row` for prediction) and the job's input (`text` or `vector`); outputs keep the
key beside the job's result, so that whatever order the workers finish in, results join back by key."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BatchFn = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class ShardTask:
    source: str
    target: str
    rows: int


class ShardJob:
    """Per-row work. `batch_rows` bounds a worker's memory; `gpu` says the job can use a GPU when one is given; `key`
    is the column that joins its output back to its input."""

    name = "job"
    batch_rows = 256
    gpu = False
    key = "id"

    def open(self, device: str = "cpu") -> BatchFn:
        raise NotImplementedError


def vectors_column(matrix: np.ndarray) -> pa.Array:
    """A float32 matrix as a list<float32> column, the type DuckDB stores vectors in."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    return fixed.cast(pa.list_(pa.float32()))


def column_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float32> column back as an (n, dim) float32 matrix, without a Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


def _worker_threads() -> int:
    # The CPUs the engine gave this worker (Ray sets OMP_NUM_THREADS to them): a library left to itself would start
    # a thread per core of the machine in every worker.
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def _threads(device: str) -> None:
    if device == "cpu":
        import torch

        torch.set_num_threads(_worker_threads())


@dataclass(frozen=True)
class EmbedJob(ShardJob):
    """Texts to L2-normalized sentence vectors, exactly as `kdstudio embed` computes them in-process."""

    model: str
    max_length: int
    batch_size: int
    name = "embed"
    gpu = True

    def open(self, device: str = "cpu") -> BatchFn:
        from kdstudio.config import EmbeddingSettings
        from kdstudio.embeddings import Embedder

        _threads(device)
        embedder = Embedder(EmbeddingSettings(self.model, self.max_length, self.batch_size), device)
        embedder.load()

        def embed(batch: pa.Table) -> pa.Table:
            vectors = embedder.encode(batch.column("text").to_pylist())
            return pa.table({"id": batch.column("id"), "vector": vectors_column(vectors)})

        return embed


@dataclass(frozen=True)
class ScoreJob(ShardJob):
    """A saved student's class probabilities for pool documents (its input: `vector` or `text`)."""

    student: str
    directory: str
    input: str
    name = "score"

    def open(self, device: str = "cpu") -> BatchFn:
        from kdstudio.plugins import get_plugins

        _threads(device)
        student = get_plugins().get("student", self.student).cls.load(Path(self.directory))

        def score(batch: pa.Table) -> pa.Table:
            features: Any = column_matrix(batch.column("vector")) if self.input == "embeddings" \
                else batch.column("text").to_pylist()
            probs = student.predict_proba(features) if batch.num_rows else np.zeros((0, 1), dtype=np.float32)
            return pa.table({"id": batch.column("id"), "probs": vectors_column(probs)})

        return score


@dataclass(frozen=True)
class PredictJob(ShardJob):
    """An exported model folder's probabilities, with onnxruntime alone (kdstudio.runtime)."""

    model_dir: str
    name = "predict"
    gpu = True
    key = "row"

    def open(self, device: str = "cpu") -> BatchFn:
        from kdstudio.runtime import Classifier

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else \
            ["CPUExecutionProvider"]
        classifier = Classifier(self.model_dir, threads=_worker_threads() if device == "cpu" else None,
                                providers=providers)

        def predict(batch: pa.Table) -> pa.Table:
            probs = classifier.predict_proba(batch.column("text").to_pylist())
            return pa.table({"row": batch.column("row"), "probs": vectors_column(probs)})

        return predict


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_shard(fn: BatchFn, job: ShardJob, task: ShardTask) -> int:
    """Run `fn` over one shard, `job.batch_rows` rows at a time, and write the target atomically (a temporary file
    renamed into place): a task retried after its worker died replaces the file instead of adding rows."""
    table = pq.read_table(task.source)
    parts = [fn(table.slice(start, job.batch_rows)) for start in range(0, table.num_rows, job.batch_rows)]
    out = pa.concat_tables(parts) if parts else fn(table)
    out = out.replace_schema_metadata({"kdstudio.worker": worker_name(), "kdstudio.job": job.name})
    target = Path(task.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    pq.write_table(out, partial)
    os.replace(partial, target)
    return table.num_rows
