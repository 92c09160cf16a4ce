"""Human review of teacher labels: what to send to people, what came back, and how often the teacher was right."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from kdstudio.errors import KdError
from kdstudio.interfaces import ReviewItem
from kdstudio.store.review import Candidate

FILTERS = ("low-confidence", "disagreement", "suspect", "all", "check")


@dataclass
class PushReport:
    backend: str
    location: str
    project_ref: str
    created: bool
    chosen: int
    sent: int
    already_there: int


@dataclass
class PullReport:
    backend: str
    location: str
    found: int
    added: int
    already: int
    unknown: int
    ignored: int
    withdrawn: int = 0  # labels taken back: their annotation is gone from the review project


@dataclass
class ConnectReport:
    backend: str
    location: str
    project_ref: str
    url: str
    model_backend: bool  # registered now (False: it already was)
    webhook: bool


@dataclass
class ReviewState:
    unchecked: int  # teacher labels no person has checked
    below: int  # of those, below the project's review threshold
    threshold: float
    human: int  # documents people have labelled
    agreement: Agreement


@dataclass
class Agreement:
    """The teacher's measured accuracy, with people's labels as the truth."""

    n: int
    agreed: int
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)  # human label -> (documents, teacher agreed)
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (teacher said, person said, count)

    @property
    def accuracy(self) -> float | None:
        return self.agreed / self.n if self.n else None


def choose(candidates: list[Candidate], filter: str, limit: int | None, below: float,
           student_labels: Callable[[list[str]], list[str]] | None) -> list[ReviewItem]:
    """The teacher labels to send, in the candidates' order: `low-confidence` (confidence below `below`, or none),
    `disagreement` (the latest student chose another label), `suspect` or `all` (every one; the caller orders
    suspects by the audit)."""
    if filter not in FILTERS:
        raise KdError(f"--filter {filter!r} is not known", f"use one of {', '.join(FILTERS)}")
    if filter == "low-confidence":
        candidates = [c for c in candidates if c.confidence is None or c.confidence < below]
    elif filter == "disagreement":
        if student_labels is None:
            raise KdError("--filter disagreement needs a trained student", "run `kdstudio distill` first")
        predicted = student_labels([c.doc_id for c in candidates])
        candidates = [c for c, p in zip(candidates, predicted, strict=True) if p != c.label]
    if limit is not None:
        candidates = candidates[:limit]
    return [ReviewItem(c.doc_id, c.text, c.label, c.confidence, c.model) for c in candidates]


def agreement(pairs: list[tuple[str, str, str]], labels: list[str]) -> Agreement:
    per_class: dict[str, tuple[int, int]] = {}
    wrong: Counter[tuple[str, str]] = Counter()
    for _, teacher, human in pairs:
        n, ok = per_class.get(human, (0, 0))
        per_class[human] = (n + 1, ok + (teacher == human))
        if teacher != human:
            wrong[(teacher, human)] += 1
    ordered = {x: per_class[x] for x in labels if x in per_class}
    return Agreement(len(pairs), sum(ok for _, ok in per_class.values()), ordered,
                     [(t, h, n) for (t, h), n in wrong.most_common()])
