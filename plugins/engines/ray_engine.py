"""Ray as kdstudio's engine: shard jobs run as Ray Data `map_batches` with an actor pool (each actor loads the model
once and takes whole shards), streamed batches on a pool of Ray actors. Ray restarts a killed actor and retries its
task; the task's output shard is replaced atomically, so rows are neither lost nor doubled.

Ray is imported on first use, not with the plugin: `kdstudio` must start fast and work without it."""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from kdstudio.component import Option
from kdstudio.engine import Engine, ShardJob, ShardTask, run_shard
from kdstudio.errors import KdError, MissingPackage


def _host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _is_loopback(address: str) -> bool:
    found = _host_port(address.removeprefix("ray://"))
    return found is not None and (found[0] == "localhost" or found[0].startswith("127.") or found[0] == "::1")


def _check_reachable(address: str) -> None:
    """One line at once when nothing listens there; Ray itself would retry for minutes."""
    found = _host_port(address)
    if found is None:
        return
    try:
        socket.create_connection(found, timeout=5).close()
    except OSError as exc:
        raise KdError(f"no Ray cluster answers at {address}: {exc.strerror or exc}",
                      "start one (`ray start --head`), or check --address / RAY_ADDRESS") from None


class _ShardWorker:
    """A Ray Data actor: one per worker for the whole job; each call runs the shards of its batch."""

    def __init__(self, job: ShardJob, device: str) -> None:
        self.job = job
        self.fn = job.open(device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = [run_shard(self.fn, self.job, ShardTask(str(s), str(t), int(n)))
                for s, t, n in zip(batch["source"], batch["target"], batch["rows"], strict=True)]
        return {"target": batch["target"], "rows": np.array(rows, dtype=np.int64)}


def _worker_class(job: ShardJob, device: str) -> type:
    """The actor class with the job inside it: Ray ships the class itself, rather than constructor arguments that
    it would have to keep in the object store for restarts."""

    class ShardWorker(_ShardWorker):
        def __init__(self) -> None:
            super().__init__(job, device)

    return ShardWorker


class _StreamWorker:
    """A Ray actor kept for the engine's lifetime; it loads a job's model when the job changes (a new student each
    round) and runs one batch per call."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.job: ShardJob | None = None
        self.fn: Callable[[pa.Table], pa.Table] | None = None

    def run(self, job: ShardJob, batch: pa.Table) -> pa.Table:
        if job != self.job:
            self.fn, self.job = job.open(self.device), job
        return self.fn(batch)  # type: ignore[misc]


class RayEngine(Engine):
    """Ray: embed, score and predict on a Ray cluster (Ray Data over Parquet shards, one model load per worker)."""

    name = "ray"
    options = (
        Option("address", str, "", "a running cluster (host:port, ray://host:port, or auto); empty: RAY_ADDRESS, "
                                   "else a Ray started here that listens on 127.0.0.1 only"),
        Option("workers", int, 0, "workers per job; 0: one per GPU when the cluster has GPUs, else one per "
                                  "cpus_per_worker CPUs", low=0),
        Option("cpus_per_worker", int, 1, "CPUs (and threads) each worker takes", low=1),
        Option("shard_rows", int, 2048, "rows per Parquet shard: the unit a worker loads, and redoes if it dies",
               low=1),
        Option("scratch", str, "", "a folder every node can read and write (shared storage on a real cluster); "
                                   "empty: inside the project"),
        Option("object_store_mb", int, 1024, "object store of a Ray started here (Ray's default takes 30% of RAM)",
               low=64),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._ray: Any = None
        self._initialized_here = False
        self._stream_actors: list[Any] = []

    # -- connecting --------------------------------------------------------------------------------------------

    @property
    def ray(self) -> Any:
        if self._ray is None:
            self._ray = self._connect()
        return self._ray

    def _connect(self) -> Any:
        address = self.address or os.environ.get("RAY_ADDRESS", "")
        # kdstudio reaches no network but the cluster: no usage reports to Ray's servers, no metrics queries.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
        if not address or _is_loopback(address):
            # Without this, Ray on Linux binds every socket to all interfaces whatever address it is given, and
            # rewrites 127.0.0.1 in an address to the machine's interface, where a loopback-only cluster is not.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if address:
            _check_reachable(address)
        try:
            import ray
            import ray.data  # configures the "ray.data" logger, quieted below
        except ImportError:
            raise MissingPackage("the ray engine needs Ray", "pip install 'kdstudio[ray]'") from None
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                             object_store_memory=self.object_store_mb * 2**20)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise KdError(f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: "
                              f"{str(exc).splitlines()[0]}",
                              "check --address; a cluster started by `ray start` checks a token by default: set "
                              "RAY_AUTH_MODE=token, with the token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None
            self._initialized_here = True
        # Ray Data logs every execution to the console; its log file keeps the detail.
        for handler in logging.getLogger("ray.data").handlers:
            if type(handler).__name__ == "PlainRayHandler":
                handler.setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        return ray

    def _resources(self) -> tuple[float, float]:
        resources = self.ray.cluster_resources()
        return float(resources.get("CPU", 0)), float(resources.get("GPU", 0))

    def _placement(self, job: ShardJob | None) -> tuple[int, dict[str, Any], str]:
        """(workers, Ray resources per worker, device) for a job."""
        cpus, gpus = self._resources()
        if gpus >= 1 and (job is None or job.gpu):
            return self.workers or int(gpus), {"num_gpus": 1, "num_cpus": self.cpus_per_worker}, "cuda"
        workers = self.workers or max(1, int(cpus // self.cpus_per_worker))
        return workers, {"num_cpus": self.cpus_per_worker}, "cpu"

    def describe(self) -> str:
        cpus, gpus = self._resources()
        workers, _, device = self._placement(None)
        where = self.address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        return f"ray at {where}: {workers} workers on {device} ({cpus:g} CPUs, {gpus:g} GPUs)"

    # -- jobs --------------------------------------------------------------------------------------------------

    def map_shards(self, job: ShardJob, tasks: Sequence[ShardTask],
                   on_progress: Callable[[int], None] | None = None) -> None:
        if not tasks:
            return
        ray = self.ray
        self._release_stream_pool()  # its actors hold CPUs that this job's actors need
        workers, resources, device = self._placement(job)
        workers = min(workers, len(tasks))
        items = [{"source": t.source, "target": t.target, "rows": t.rows} for t in tasks]
        data = ray.data.from_items(items, override_num_blocks=len(items))
        # One shard per call, at most two queued per actor: a slow or restarted worker holds back little.
        results = data.map_batches(
            _worker_class(job, device), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2), **resources)
        for batch in results.iter_batches(batch_size=1, batch_format="numpy"):
            if on_progress:
                on_progress(int(batch["rows"].sum()))

    def stream(self, job: ShardJob, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        ray = self.ray
        actors = self._stream_pool(job)
        in_flight: deque[Any] = deque()
        source = iter(batches)
        submitted = 0
        for batch in source:
            in_flight.append(actors[submitted % len(actors)].run.remote(job, batch))
            submitted += 1
            if len(in_flight) >= len(actors):  # one batch per worker: what is computed ahead may go unused
                break
        while in_flight:
            result = ray.get(in_flight.popleft())
            for batch in source:  # keep the workers busy while the caller looks at this result
                in_flight.append(actors[submitted % len(actors)].run.remote(job, batch))
                submitted += 1
                break
            yield result

    def _stream_pool(self, job: ShardJob) -> list[Any]:
        if not self._stream_actors:
            workers, resources, device = self._placement(job)
            actor = self.ray.remote(_StreamWorker).options(max_restarts=-1, max_task_retries=-1, **resources)
            self._stream_actors = [actor.remote(device) for _ in range(workers)]
        return self._stream_actors

    def _release_stream_pool(self) -> None:
        for actor in self._stream_actors:
            self.ray.kill(actor)
        self._stream_actors = []

    def close(self) -> None:
        if self._ray is None:
            return
        self._release_stream_pool()
        if self._initialized_here:
            # Disconnects this driver from a cluster it joined; a Ray it started (no address) stops with it.
            self._ray.shutdown()
        self._ray = None
