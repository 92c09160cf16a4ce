"""What a running distillation publishes for other processes. DuckDB lets one process write a project and no other
process read it meanwhile, so `status`, `runs` and `cost` from a second terminal read this file instead: the writer
replaces it (atomically) at the start of the run and after every round, and removes it when the run ends."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdstudio.store import RoundRow, RunRow, SpendRow

SNAPSHOT_NAME = ".kdstudio-progress.json"


@dataclass
class Snapshot:
    """The read-only commands' view of a project that another process is writing."""

    pid: int
    written_at: str
    run_id: int
    round: int | None
    status: dict[str, Any]  # Status as a dict: project.py rebuilds it
    runs: list[RunRow]
    rounds: dict[int, list[RoundRow]]
    cost: list[SpendRow]

    def describe(self) -> str:
        where = f"round {self.round}" if self.round is not None else "starting"
        return (f"distill run {self.run_id} is running in process {self.pid} and holds the project; showing its "
                f"progress as of {self.written_at} ({where})")


def _path(directory: Path) -> Path:
    return Path(directory) / SNAPSHOT_NAME


def publish(directory: Path, snapshot: Snapshot) -> None:
    data = asdict(snapshot)
    target = _path(directory)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, target)  # readers see the old snapshot or the new one, never half of one


def withdraw(directory: Path) -> None:
    _path(directory).unlink(missing_ok=True)


def now() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def read(directory: Path, writer_pid: int | None) -> Snapshot | None:
    """The snapshot published by `writer_pid` (the process holding the project's lock), or None: a snapshot left by
    a process that is gone, or by another one, says nothing about the current writer."""
    try:
        data = json.loads(_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if writer_pid is not None and data.get("pid") != writer_pid:
        return None
    try:
        return Snapshot(
            pid=data["pid"], written_at=data["written_at"], run_id=data["run_id"], round=data["round"],
            status=data["status"], runs=[RunRow(**r) for r in data["runs"]],
            rounds={int(k): [RoundRow(**r) for r in v] for k, v in data["rounds"].items()},
            cost=[SpendRow(**r) for r in data["cost"]])
    except (KeyError, TypeError):
        return None
