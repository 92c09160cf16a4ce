"""A real two-node Ray cluster for the tests, on loopback only, stopped by the PIDs of its processes.

`ray start --node-ip-address 127.0.0.1` is not enough on Linux: Ray swaps in the machine's interface address and
binds every socket to all interfaces. `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, set before Ray is imported, makes it
use 127.0.0.1 throughout; `ray.cluster_utils.Cluster` starts a head plus added nodes as this process's children.
Never `ray stop`: it stops every Ray process on the machine, not only ours."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

OBJECT_STORE = 96 * 2**20  # Ray would take 30% of RAM per node


def descendants(root: int | None = None) -> set[int]:
    """PIDs of every process below `root` (default: this one)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every TCP or UDP socket that one of `pids` listens on."""
    found = []
    for flags in ("-ltnpH", "-lunpH"):
        out = subprocess.run(["ss", flags], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            fields = line.split()
            for pid in map(int, re.findall(r"pid=(\d+)", line)):
                if pid in pids:
                    found.append((fields[3], pid))
    return found


@dataclass
class RayCluster:
    address: str
    pids: set[int]


@contextmanager
def ray_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[RayCluster]:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # No usage reports to Ray's servers: the tests reach no network but the loopback.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_DATA_USAGE_DISABLED"] = "1"
    import ray
    from ray.cluster_utils import Cluster

    before = descendants()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus_per_node, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield RayCluster(cluster.address, descendants() - before)
    finally:
        ray.shutdown()
        cluster.shutdown()
        # Whatever Ray left behind of ours (workers outlive their raylet for a moment) is stopped by PID.
        deadline = time.monotonic() + 10
        while (left := descendants() - before) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
