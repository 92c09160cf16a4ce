"""Runs a teacher over documents through the ledger: cached answers are reused, new ones are persisted the moment
they arrive, and budgets are checked before anything is sent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kdstudio.interfaces import Doc, TeachContext, Teacher, TeacherLabel
from kdstudio.store import Ledger, request_hash


@dataclass
class Budget:
    """Caps on what a run may spend; None means no cap. `spent_*` count this run's real calls only."""

    max_calls: int | None = None
    max_usd: float | None = None
    spent_calls: int = 0
    spent_usd: float = 0.0

    def calls_left(self) -> int | None:
        return None if self.max_calls is None else max(0, self.max_calls - self.spent_calls)

    def exhausted(self) -> str | None:
        if self.max_calls is not None and self.spent_calls >= self.max_calls:
            return f"teacher-call budget reached ({self.spent_calls}/{self.max_calls})"
        if self.max_usd is not None and self.spent_usd >= self.max_usd:
            return f"USD budget reached (${self.spent_usd:.4f}/${self.max_usd:.2f})"
        return None


@dataclass
class TeachOutcome:
    labelled: dict[str, TeacherLabel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None


class TeacherRunner:
    def __init__(self, ledger: Ledger, teacher: Teacher, context: TeachContext, run_id: int | None,
                 budget: Budget | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        self.ledger = ledger
        self.teacher = teacher
        self.context = context
        self.run_id = run_id
        self.budget = budget or Budget()
        self.should_stop = should_stop or (lambda: False)

    def label(self, docs: Sequence[Doc], round: int | None = None,
              on_label: Callable[[TeacherLabel], None] | None = None) -> TeachOutcome:
        outcome = TeachOutcome()
        requests = {doc.id: self.teacher.request(doc, self.context) for doc in docs}
        hashes = {doc_id: request_hash(req) for doc_id, req in requests.items()}
        cached = self.ledger.cached(list(hashes.values()))
        to_send: list[Doc] = []
        for doc in docs:
            hit = cached.get(hashes[doc.id])
            if hit is None:
                to_send.append(doc)
                continue
            outcome.cache_hits += 1
            self.ledger.reuse(hit, doc.id, self.run_id, round)
            if hit.label is None:
                outcome.failed[doc.id] = hit.error or "no label"
            else:
                outcome.labelled[doc.id] = TeacherLabel(doc.id, hit.label, hit.confidence, hit.probs)
        left = self.budget.calls_left()
        if left is not None and len(to_send) > left:
            to_send = to_send[:left]
            outcome.stopped = self.budget.exhausted() or f"teacher-call budget allows only {left} more calls"
        if not to_send:
            return outcome
        if self.budget.exhausted():
            outcome.stopped = self.budget.exhausted()
            return outcome
        answers = self.teacher.label(to_send, self.context)
        try:
            for answer in answers:
                self.ledger.record(
                    request_hash=hashes[answer.doc_id], doc_id=answer.doc_id, run_id=self.run_id,
                    model=self.teacher.model_name, prompt=requests[answer.doc_id] if self._keep_prompt() else None,
                    response=answer.response, label=answer.label, confidence=answer.confidence, probs=answer.probs,
                    tokens_in=answer.tokens_in, tokens_out=answer.tokens_out, cost_usd=answer.cost_usd,
                    latency_s=answer.latency_s, error=answer.error, round=round,
                )
                outcome.calls += 1
                outcome.cost_usd += answer.cost_usd
                self.budget.spent_calls += 1
                self.budget.spent_usd += answer.cost_usd
                if answer.label is None:
                    outcome.failed[answer.doc_id] = answer.error or "no label"
                else:
                    outcome.labelled[answer.doc_id] = answer
                if on_label:
                    on_label(answer)
                reason = self.budget.exhausted() or ("cancelled" if self.should_stop() else None)
                if reason:
                    outcome.stopped = reason
                    break
        finally:
            close = getattr(answers, "close", None)
            if close:
                close()  # a generator stops sending the moment we stop asking
        return outcome

    def _keep_prompt(self) -> bool:
        # A simulated teacher's "request" carries the document only; the ledger already knows it by doc_id.
        return not self.teacher.simulated
