"""Distillation runs, their rounds, and the students they keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kdstudio.secrets import redact
from kdstudio.store.store import Store


@dataclass
class RunRow:
    id: int
    config: dict[str, Any]
    status: str
    simulated: bool
    best_round: int | None
    stop_reason: str | None
    created_at: Any
    finished_at: Any

    def kept(self, rounds: list[RoundRow]) -> RoundRow | None:
        """Of this run's `rounds`, the finished one whose student the run kept."""
        return next((r for r in rounds if r.phase == "done" and r.round == self.best_round), None)


@dataclass
class RoundRow:
    run_id: int
    round: int
    phase: str
    selector: str | None
    selected: list[dict[str, Any]]
    scored: int | None
    selector_state: dict[str, Any]
    n_labels: int | None
    cost_usd: float | None
    metrics: dict[str, Any]
    timings: dict[str, Any]

    @property
    def bought(self) -> int:
        """The labels the run had selected for its teacher by this round: what --budget-labels counts. The student
        also trains on people's labels and generated samples: `n_labels` counts those too."""
        return int(self.metrics.get("n_selected", self.n_labels or 0))


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _p(value: str | None, default: Any) -> Any:
    return default if value is None else json.loads(value)


class RunLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.con = store.con

    def create(self, config: dict[str, Any], simulated: bool) -> int:
        return int(self.con.execute(
            "INSERT INTO runs (config, status, simulated) VALUES (?, 'running', ?) RETURNING id",
            [_j(config), simulated],
        ).fetchall()[0][0])

    def get(self, run_id: int) -> RunRow | None:
        rows = self.con.execute(
            "SELECT id, config, status, simulated, best_round, stop_reason, created_at, finished_at FROM runs "
            "WHERE id = ?", [run_id]).fetchall()
        if not rows:
            return None
        r = rows[0]
        return RunRow(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])

    def all(self) -> list[RunRow]:
        ids = [r[0] for r in self.con.execute("SELECT id FROM runs ORDER BY id").fetchall()]
        return [run for run in map(self.get, ids) if run is not None]

    def latest(self) -> RunRow | None:
        rows = self.con.execute("SELECT max(id) FROM runs").fetchall()
        return self.get(rows[0][0]) if rows[0][0] is not None else None

    def update_config(self, run_id: int, config: dict[str, Any]) -> None:
        self.con.execute("UPDATE runs SET config = ? WHERE id = ?", [json.dumps(config), run_id])

    def set_status(self, run_id: int, status: str, *, best_round: int | None = None,
                   stop_reason: str | None = None) -> None:
        finished = status != "running"
        self.con.execute(
            "UPDATE runs SET status = ?, best_round = coalesce(?, best_round), stop_reason = ?, "
            "finished_at = CASE WHEN ? THEN current_timestamp END WHERE id = ?",
            [status, best_round, redact(stop_reason), finished, run_id],
        )

    def save_selection(self, run_id: int, round: int, selector: str, selected: list[dict[str, Any]], scored: int,
                       selector_state: dict[str, Any]) -> None:
        self.con.execute(
            "INSERT INTO rounds (run_id, round, phase, selector, selected, scored, selector_state) "
            "VALUES (?, ?, 'selected', ?, ?, ?, ?)",
            [run_id, round, selector, _j(selected), scored, _j(selector_state)],
        )

    def finish_round(self, run_id: int, round: int, *, selected: list[dict[str, Any]], n_labels: int,
                     cost_usd: float, metrics: dict[str, Any], timings: dict[str, Any],
                     selector_state: dict[str, Any]) -> None:
        """Mark a round done with what it bought: `selected` may be fewer documents than were chosen, when the budget
        stopped the teacher first."""
        self.con.execute(
            "UPDATE rounds SET phase = 'done', selected = ?, n_labels = ?, cost_usd = ?, metrics = ?, timings = ?, "
            "selector_state = ? WHERE run_id = ? AND round = ?",
            [_j(selected), n_labels, cost_usd, _j(metrics), _j(timings), _j(selector_state), run_id, round],
        )

    def rounds(self, run_id: int) -> list[RoundRow]:
        rows = self.con.execute(
            "SELECT run_id, round, phase, selector, selected, scored, selector_state, n_labels, cost_usd, metrics, "
            "timings FROM rounds WHERE run_id = ? ORDER BY round", [run_id]).fetchall()
        return [RoundRow(r[0], r[1], r[2], r[3], _p(r[4], []), r[5], _p(r[6], {}), r[7], r[8], _p(r[9], {}),
                         _p(r[10], {})) for r in rows]

    def save_student(self, run_id: int, round: int, kind: str, params: dict[str, Any], metrics: dict[str, Any],
                     artifact_path: str) -> int:
        return int(self.con.execute(
            "INSERT INTO students (run_id, round, kind, params, metrics, artifact_path) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id", [run_id, round, kind, _j(params), _j(metrics), artifact_path]).fetchall()[0][0])

    def delete_student(self, student_id: int) -> None:
        self.con.execute("DELETE FROM students WHERE id = ?", [student_id])

    def students(self, run_id: int | None = None) -> list[tuple[int, int, int, str, str, dict[str, Any]]]:
        rows = self.con.execute(
            "SELECT id, run_id, round, kind, artifact_path, metrics FROM students "
            "WHERE ? IS NULL OR run_id = ? ORDER BY id", [run_id, run_id]).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], _p(r[5], {})) for r in rows]
