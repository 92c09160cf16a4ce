"""What a run carries from round to round, and how it is rebuilt from the run log: resuming is `restore` over the
saved rounds, a pure function."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from kdstudio.interfaces import Student
from kdstudio.method_auto import keeps_older, kept_on, trusted_choice
from kdstudio.store import RoundRow


@dataclass
class RoundReport:
    round: int
    n_selected: int
    n_labels: int
    failed: int
    cost_usd: float
    calls: int
    scored: int
    metrics: dict[str, Any]
    timings: dict[str, float]
    best: bool
    generated: int = 0

    @classmethod
    def from_row(cls, row: RoundRow) -> RoundReport:
        m = row.metrics
        return cls(row.round, m.get("n_selected", 0), row.n_labels or 0, m.get("failed", 0), row.cost_usd or 0.0,
                   m.get("calls", 0), row.scored or 0, m, row.timings, bool(m.get("best")), m.get("generated", 0))


@dataclass
class Trained:
    """A round's student and what it was trained on: the document ids, and every label of the run by id."""

    student: Student
    train_ids: list[str]
    labelled: dict[str, Any]
    doubted: int = 0  # labels the run's doubt held out or down-weighted
    free_note: str = ""  # what the free labeller added this round, and why
    free_added: int = 0  # pseudo-labels trained on this round (never stored, never counted as labels)
    composition: dict[str, Any] = field(default_factory=dict)  # training labels by source and by label
    options: dict[str, Any] = field(default_factory=dict)  # the student's options it was trained with
    auto: dict[str, Any] | None = None  # method = auto: the recipe chosen and its evidence (kdstudio.method_auto)


@dataclass
class RunState:
    """Everything that changes as a run goes on. `selected` holds every document bought for training so far, with
    the score it was selected with; `pending` is a round whose selection was saved but that never finished (it is
    redone with its own batch); `trained` is the latest student, the one the next selection scores with."""

    run_id: int
    round_no: int = 0
    reports: list[RoundReport] = field(default_factory=list)
    selected: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_round: int | None = None
    lowest_val_loss: float = math.inf
    since_lower_loss: int = 0  # rounds since the validation loss last fell: what `patience` counts
    pending: RoundRow | None = None
    selector_state: dict[str, Any] | None = None
    trained: Trained | None = None
    stop_reason: str = ""

    @property
    def chosen(self) -> set[str]:
        return {s["id"] for s in self.selected}


def best_key(metrics: dict[str, Any], n_labels: int) -> float:
    """What a run's best round is compared on where accuracies or losses decide (`Verdict`), lower is better: with
    method auto and trusted labels outside the check sample (gold validation labels), the share of them the student
    gets wrong, ties going to the round with more labels; otherwise the validation loss against the teacher's labels
    (infinite without validation labels). Never the check sample: choosing the round on it made its estimate of the
    kept student read 2.4 points high (docs/benchmarks.md, "The check sample after auto")."""
    judged = kept_on(metrics)
    if judged:
        return 1.0 - judged["accuracy"] - n_labels * 1e-9
    return metrics.get("val", {}).get("log_loss", math.inf)


class KeptBy(StrEnum):
    """The rules that judge whether a round's student replaces the run's kept one; a round records the one that
    judged it (`kept_by` in its metrics), which its line and `--json` show."""

    SIGN_TEST = "sign test"  # auto, gold validation labels: kept unless the kept one is clearly right more often there
    ACCURACY = "accuracy"  # auto, gold validation labels recorded without per-document results: the more accurate
    LATEST = "latest"  # the check sample the only trusted labels, or no validation labels at all: the latest round
    VAL_LOSS = "val loss"  # the teacher's validation labels: the lowest validation loss


def kept_by(metrics: dict[str, Any], kept: dict[str, Any] | None) -> KeptBy:
    """Which rule judges a round (its `metrics`) against the run's kept round (`kept`, None before the first)."""
    newer = kept_on(metrics)
    if newer is None:
        return KeptBy.LATEST if trusted_choice(metrics) is not None or "val" not in metrics else KeptBy.VAL_LOSS
    older = newer if kept is None else kept_on(kept)  # the first round: whether it could be judged so later
    return KeptBy.SIGN_TEST if older is not None and keeps_older(older, newer) is not None else KeptBy.ACCURACY


def rule_of(metrics: dict[str, Any]) -> KeptBy:
    """The rule that judged a finished round: as it recorded, or for rounds recorded before rules were, the one that
    would judge it now."""
    recorded = metrics.get("kept_by")
    return KeptBy(recorded) if recorded in set(KeptBy) else kept_by(metrics, None)


class Verdict(NamedTuple):
    replaces: bool  # whether the round's student becomes the run's kept one
    rule: KeptBy  # the rule that said so


def judge_best(state: RunState, metrics: dict[str, Any], n_labels: int) -> Verdict:
    """Whether a new round's student is kept over the run's best so far, and by which rule. With method auto and gold
    validation labels, yes unless the kept one is clearly right more often on them (a sign test): picking the round
    most right on 50 labels picked luck and cost 0.7 point of test accuracy against keeping the last
    (docs/benchmarks.md). With method auto judged on the check sample alone (a project without gold), always: the
    round with the lowest validation loss against the teacher's labels cost 0.66 point against the latest there.
    Otherwise by `best_key`."""
    kept = next((r.metrics for r in state.reports if r.round == state.best_round), None)
    rule = kept_by(metrics, kept)
    if state.best_round is None or rule == KeptBy.LATEST:
        return Verdict(True, rule)
    older, newer = kept_on(kept or {}), kept_on(metrics)
    if rule == KeptBy.SIGN_TEST and older and newer:
        return Verdict(not keeps_older(older, newer), rule)
    return Verdict(best_key(metrics, n_labels) < state.best_loss, rule)


def count_patience(state: RunState, metrics: dict[str, Any]) -> None:
    """`patience` counts rounds without a lower validation loss, as its setting says, whichever round is kept; a
    round without a validation loss starts the count again, since nothing says it is worse."""
    loss = metrics.get("val", {}).get("log_loss")
    if loss is not None and loss >= state.lowest_val_loss:
        state.since_lower_loss += 1
        return
    state.since_lower_loss = 0
    if loss is not None:
        state.lowest_val_loss = loss


def restore(run_id: int, history: list[RoundRow]) -> RunState:
    """The state a run was in after its last saved step (its student aside, which is retrained from the labels)."""
    reports = [RoundReport.from_row(row) for row in history if row.phase == "done"]
    pending = history[-1] if history and history[-1].phase == "selected" else None
    best = [r for r in reports if r.best]
    state = RunState(
        run_id=run_id,
        round_no=history[-1].round + (0 if pending else 1) if history else 0,
        reports=reports,
        selected=[item for row in history if row.phase == "done" for item in row.selected],
        best_loss=best_key(best[-1].metrics, best[-1].n_labels) if best else math.inf,
        best_round=best[-1].round if best else None,
        pending=pending,
        selector_state=history[-1].selector_state if history else None,
    )
    for report in reports:
        count_patience(state, report.metrics)
    return state


@dataclass
class RunResult:
    run_id: int
    status: str
    stop_reason: str
    best_round: int | None
    student_id: int | None
    simulated: bool
    rounds: list[RoundReport]
    # What the run paid for, all in: its teacher calls (one per answer, however many tries), their cost, and the
    # labels they bought for training and for validation.
    calls: int = 0
    cost_usd: float = 0.0
    train_labels: int = 0
    val_labels: int = 0

    @property
    def best(self) -> RoundReport | None:
        """The round whose student the run kept."""
        return next((r for r in self.rounds if r.round == self.best_round), None)
