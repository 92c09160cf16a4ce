"""What a run tells its watchers (the CLI, the TUI, the progress snapshot), as typed values. Each has a `kind`, so
that a watcher can filter without importing every class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kdstudio.run_state import RoundReport, RunResult


@dataclass(frozen=True)
class RunStarted:
    """Said once the run has checked its teacher and before it buys anything: what it is about to buy."""

    kind: ClassVar[str] = "run"
    run_id: int
    simulated: bool
    teacher: str
    config: dict[str, Any]
    train_labels: int
    val_labels: int
    applied: tuple[str, ...] = ()  # on a resume: the settings the command line changed, "name: old -> new"


@dataclass(frozen=True)
class TeacherChecked:
    """Said before the first label is bought, for a teacher that can be asked for free: how often it agrees with the
    labels people (or the data) gave, and what suggests it is guessing."""

    kind: ClassVar[str] = "teacher-check"
    teacher: str
    agreement: tuple[tuple[str, float, int], ...]  # (against "human" or "gold", agreement, documents)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Teaching:
    kind: ClassVar[str] = "teaching"
    round: int
    n: int


@dataclass(frozen=True)
class Labelled:
    """One teacher answer recorded (paid, or served from the ledger)."""

    kind: ClassVar[str] = "label"
    round: int
    doc_id: str


@dataclass(frozen=True)
class SamplesGenerated:
    """A PGKD generation step: the samples kept, and why others were not."""

    kind: ClassVar[str] = "generated"
    round: int
    kept: int
    duplicates: int
    rejected: int
    cached: bool
    error: str | None


@dataclass(frozen=True)
class RoundDone:
    kind: ClassVar[str] = "round"
    report: RoundReport


@dataclass(frozen=True)
class RunDone:
    kind: ClassVar[str] = "done"
    result: RunResult


Event = RunStarted | TeacherChecked | Teaching | Labelled | SamplesGenerated | RoundDone | RunDone
EventFn = Callable[[Event], None]
