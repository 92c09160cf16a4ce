"""The engine contract, whole: what an engine is (`Engine`), the work it is given (`ShardJob` over `ShardTask`s, or a
stream of batches) and how a worker does one shard (`run_shard`). Engines import this module and nothing else of
kdstudio's; the jobs themselves (kdstudio.jobs) are opaque, picklable values to them.

Shards hold a key column (`id`, or `row` for prediction) and the job's input (`text` or `vector`); outputs keep the
key beside the job's result, so that whatever order the workers finish in, results join back by key."""

from __future__ import annotations

import os
import socket
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kdstudio.component import Component
from kdstudio.vectors import column_matrix as column_matrix
from kdstudio.vectors import vectors_column as vectors_column

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


def worker_threads() -> int:
    # The CPUs the engine gave this worker (Ray sets OMP_NUM_THREADS to them): a library left to itself would start
    # a thread per core of the machine in every worker.
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


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


class Engine(Component):
    """Runs kdstudio's bulk work (embedding, pool scoring, prediction) somewhere other than this process: a cluster
    engine maps a `ShardJob` (kdstudio.jobs) over Parquet shards, or over a stream of in-memory batches. Without an
    engine, that work runs in-process."""

    # Rows per Parquet shard: the unit a worker loads, and redoes if it dies.
    shard_rows: int = 2048
    # A folder every worker can read and write (a shared filesystem on a real cluster); empty: inside the project.
    scratch: str = ""

    @abstractmethod
    def map_shards(self, job: ShardJob, tasks: Sequence[ShardTask],
                   on_progress: Callable[[int], None] | None = None) -> None:
        """Run `job` on every task's `source` shard, writing its `target` with `run_shard` (which
        replaces the file atomically, so a retried task never duplicates rows). `on_progress` gets the rows of each
        finished task."""
        raise NotImplementedError

    @abstractmethod
    def stream(self, job: ShardJob, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """The job's output for each batch, in the order given, computed ahead while the caller consumes; the caller
        may stop early (M-RARU stops when its batch is full)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass
