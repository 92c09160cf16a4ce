"""Runs a teacher over documents through the ledger: cached answers are reused, new ones are persisted the moment
they arrive, and budgets are checked before anything is sent."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from kdstudio.interfaces import Doc, GenerationRequest, SampleWriter, TeachContext, Teacher, TeacherLabel
from kdstudio.money import usd
from kdstudio.store import CachedCall, Ledger, request_hash


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
            return f"USD budget reached ({usd(self.spent_usd)} of {usd(self.max_usd)})"
        return None


class BudgetGate:
    """The USD budget as a gate that concurrent requests pass one by one: each reserves its worst-case price
    before it is sent and settles the real one when it is answered, so the sum can never pass the cap."""

    def __init__(self, budget: Budget) -> None:
        self._lock = threading.Lock()
        self._base = budget.spent_usd
        self._cap = budget.max_usd
        self._committed = 0.0
        self._outstanding = 0.0
        self.refused: str | None = None
        self._closed = False

    def close(self) -> None:
        """Refuse every further request; answers already in flight still arrive and are recorded."""
        with self._lock:
            self._closed = True

    def reserve(self, amount: float) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._cap is not None:
                left = self._cap - self._base - self._committed
                if amount > left - self._outstanding:
                    if amount > left or not self._outstanding:  # it will not fit, whatever the answers in flight cost
                        self.refused = (f"USD budget reached: the next request could cost up to {usd(amount)}, "
                                        f"{usd(max(0.0, left))} is left")
                    return False
            self._outstanding += amount
            return True

    def fits_later(self, amount: float) -> bool:
        """A reservation refused now that may fit once the requests in flight are settled at their real price
        (worst cases are several times the real cost): the caller waits instead of giving up."""
        with self._lock:
            return (not self._closed and self._cap is not None and self._outstanding > 0
                    and amount <= self._cap - self._base - self._committed)

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._outstanding -= reserved
            self._committed += actual


@contextmanager
def first_interrupt_closes(gate: BudgetGate) -> Iterator[threading.Event]:
    """While a batch is labelled, a first Ctrl-C closes the gate instead of raising: nothing new is sent, the answers
    already on their way are still recorded (they are paid for), and the caller raises KeyboardInterrupt after. A
    second Ctrl-C raises at once. (Raising at the first one would also interrupt whatever DuckDB write was running.)"""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signal handlers belong to the main thread; a worker's caller stops it with should_stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        interrupted.set()
        gate.close()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Generated:
    """A PGKD step's outcome as the loop sees it."""

    doc_ids: list[str]
    duplicates: int
    rejected: int
    cached: bool
    cost_usd: float
    error: str | None = None
    refused: bool = False  # the budget stopped it before anything was sent


# A teacher that has delivered no usable label in this many answers in a row is broken (a refused or missing key
# behind a proxy, a dead model, a prompt it cannot follow), not unlucky: the run stops as failed.
FAILING_AFTER = 20


@dataclass
class TeachOutcome:
    labelled: dict[str, TeacherLabel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None
    failing: str | None = None  # why the teacher is taken to be broken; the run must stop as failed


class TeacherRunner:
    def __init__(self, ledger: Ledger, teacher: Teacher, context: TeachContext, run_id: int | None,
                 budget: Budget | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        self.ledger = ledger
        self.teacher = teacher
        self.context = context
        self.run_id = run_id
        self.budget = budget or Budget()
        self.should_stop = should_stop or (lambda: False)
        self.failure_streak = 0  # answers in a row without a usable label, across the run's batches

    def _count(self, outcome: TeachOutcome, usable: bool, error: str | None, batch: int) -> None:
        """Keep the streak of unusable answers; past the limit (or a whole batch of at least five), the teacher
        is declared failing."""
        self.failure_streak = 0 if usable else self.failure_streak + 1
        if self.failure_streak >= min(FAILING_AFTER, max(5, batch)) and not outcome.failing:
            outcome.failing = (f"the teacher delivered no usable label in {self.failure_streak} answers in a row "
                               f"(last: {error or 'no label'})")

    def label(self, docs: Sequence[Doc], round: int | None = None,
              on_label: Callable[[TeacherLabel], None] | None = None,
              difficulty: dict[str, float] | None = None) -> TeachOutcome:
        """Label `docs` through the ledger; `difficulty` is the current student's uncertainty for this batch (for
        teachers that read it)."""
        outcome = TeachOutcome()
        context = self.context if difficulty is None else replace(self.context, difficulty=difficulty)
        requests, hashes, hits = self._lookup(self.teacher, docs, context)
        to_send = [doc for doc in docs if doc.id not in hits]
        with self.ledger.store.transaction():  # answers already paid for: reusing them is one commit, not one each
            for doc in docs:
                if (hit := hits.get(doc.id)) is not None:
                    self._reuse(hit, doc.id, round, outcome, len(docs))
        left = self.budget.calls_left()
        if left is not None and len(to_send) > left:
            to_send = to_send[:left]
            outcome.stopped = self.budget.exhausted() or f"teacher-call budget allows only {left} more calls"
        if not to_send:
            return outcome
        if self.budget.exhausted():
            outcome.stopped = self.budget.exhausted()
            return outcome
        gate = BudgetGate(self.budget)

        def consult(member: Teacher, member_docs: Sequence[Doc]) -> dict[str, TeacherLabel]:
            return self._consult(member, member_docs, replace(context, gate=gate), round)

        answers = self.teacher.label(to_send, replace(context, gate=gate, consult=consult))
        grouped = self.ledger.store.transaction() if self.teacher.local else nullcontext()
        with first_interrupt_closes(gate) as interrupted, grouped:
            self._record_all(answers, gate, hashes, requests, round, on_label, outcome, len(docs))
        if interrupted.is_set():
            raise KeyboardInterrupt  # after the answers in flight were recorded: they are paid for
        if gate.refused and not outcome.stopped:
            outcome.stopped = gate.refused
        return outcome

    def _reuse(self, hit: CachedCall, doc_id: str, round: int | None, outcome: TeachOutcome, batch: int) -> None:
        outcome.cache_hits += 1
        self.ledger.reuse(hit, doc_id, self.run_id, round)
        if hit.label is None:
            outcome.failed[doc_id] = hit.error or "no label"
        else:
            outcome.labelled[doc_id] = TeacherLabel(doc_id, hit.label, hit.confidence, hit.probs)
        self._count(outcome, hit.label is not None, hit.error, batch)

    def _lookup(self, teacher: Teacher, docs: Sequence[Doc], context: TeachContext
                ) -> tuple[dict[str, Any], dict[str, str], dict[str, CachedCall]]:
        """Each document's request, its hash (the cache key), and the ledger's answer where it has one."""
        requests = {doc.id: teacher.request(doc, context) for doc in docs}
        hashes = {doc_id: request_hash(req) for doc_id, req in requests.items()}
        cached = self.ledger.cached(list(hashes.values()))
        return requests, hashes, {d: cached[h] for d, h in hashes.items() if h in cached}

    def _write(self, teacher: Teacher, answer: TeacherLabel, digest: str, request: Any, round: int | None,
               purpose: str) -> None:
        self.ledger.record(
            request_hash=digest, doc_id=answer.doc_id, run_id=self.run_id, model=teacher.model_name,
            prompt=request if teacher.log_prompts else None, response=answer.response, label=answer.label,
            confidence=answer.confidence, probs=answer.probs, tokens_in=answer.tokens_in, tokens_out=answer.tokens_out,
            cost_usd=answer.cost_usd, latency_s=answer.latency_s, error=answer.error, round=round,
            transient=answer.transient, attempts=answer.attempts, purpose=purpose, retries=answer.retries,
            unusable=answer.unusable, unusable_usd=answer.unusable_usd)

    def _consult(self, member: Teacher, docs: Sequence[Doc], context: TeachContext,
                 round: int | None) -> dict[str, TeacherLabel]:
        """A committee's or cascade's member asked through the ledger: its cached answers are served free, new ones
        are recorded under its own model (as evidence, not labels) and paid through the run's gate and budget."""
        requests, hashes, hits = self._lookup(member, docs, context)
        found = {d: TeacherLabel(d, hit.label, hit.confidence, hit.probs, error=hit.error) for d, hit in hits.items()}
        to_send = [doc for doc in docs if doc.id not in hits]
        left = self.budget.calls_left()
        to_send = to_send if left is None else to_send[:left]
        if not to_send or self.budget.exhausted():
            return found
        answers = member.label(to_send, context)
        try:
            for answer in answers:
                self._write(member, answer, hashes[answer.doc_id], requests[answer.doc_id], round, "consult")
                self.budget.spent_calls += 1
                self.budget.spent_usd += answer.cost_usd
                found[answer.doc_id] = answer
        finally:
            close = getattr(answers, "close", None)
            if close:
                close()  # on an exception: the member stops sending the moment we stop asking
        return found

    def _record_all(self, answers: Any, gate: BudgetGate, hashes: dict[str, str], requests: dict[str, Any],
                    round: int | None, on_label: Callable[[TeacherLabel], None] | None,
                    outcome: TeachOutcome, batch: int) -> None:
        verdicts = self.teacher.consults
        try:
            for answer in answers:
                self._write(self.teacher, answer, hashes[answer.doc_id], requests[answer.doc_id], round,
                            "verdict" if verdicts else "label")
                outcome.cost_usd += answer.cost_usd
                self.budget.spent_usd += answer.cost_usd
                if not verdicts:  # a verdict's calls were counted as its members made them
                    outcome.calls += 1
                    self.budget.spent_calls += 1
                if answer.label is None:
                    outcome.failed[answer.doc_id] = answer.error or "no label"
                else:
                    outcome.labelled[answer.doc_id] = answer
                if on_label:
                    on_label(answer)
                self._count(outcome, answer.label is not None, answer.error, batch)
                reason = outcome.failing or self.budget.exhausted() or ("cancelled" if self.should_stop() else None)
                if reason:
                    # Stop sending, but keep recording what is already on its way: it is paid for.
                    outcome.stopped = reason
                    gate.close()
        finally:
            close = getattr(answers, "close", None)
            if close:
                close()  # on an exception: a generator stops the moment we stop asking

    def generate(self, request: GenerationRequest, round: int | None) -> Generated:
        """One PGKD generation call through the ledger: a replayed request is served from it (its samples are
        re-linked to the run, nothing is paid twice); a new one is priced through the budget gate."""
        writer = self.teacher
        assert isinstance(writer, SampleWriter)  # the loop checks before the run starts
        key = writer.generation_request(request, self.context)
        digest = request_hash(key)
        hit = self.ledger.cached_response(digest)
        if hit is not None:
            call_id, response = hit
            samples = self._replayed_samples(response)
            kept, duplicates = self.ledger.add_synthetic(samples, self.run_id, round, call_id)
            return Generated(kept, duplicates, 0, True, 0.0)
        if reason := self.budget.exhausted():
            return Generated([], 0, 0, False, 0.0, reason, refused=True)
        gate = BudgetGate(self.budget)
        result = writer.generate(request, replace(self.context, gate=gate))
        if result is None:
            return Generated([], 0, 0, False, 0.0, gate.refused or "the teacher sent nothing", refused=True)
        stored = json.dumps({"samples": [{"text": t, "label": lab} for t, lab in result.samples],
                             "rejected": result.rejected, "raw": result.response})
        call_id = self.ledger.record(
            request_hash=digest, doc_id=None, run_id=self.run_id, model=self.teacher.model_name, prompt=key,
            response=stored, label=None, confidence=None, probs=None, tokens_in=result.tokens_in,
            tokens_out=result.tokens_out, cost_usd=result.cost_usd, latency_s=result.latency_s, error=result.error,
            round=round, transient=result.transient, attempts=result.attempts, purpose="generate",
            retries=result.retries, unusable=result.unusable, unusable_usd=result.unusable_usd)
        self.budget.spent_calls += 1
        self.budget.spent_usd += result.cost_usd
        kept, duplicates = self.ledger.add_synthetic(result.samples, self.run_id, round, call_id)
        return Generated(kept, duplicates, result.rejected, False, result.cost_usd, result.error)

    @staticmethod
    def _replayed_samples(response: str | None) -> list[tuple[str, str]]:
        try:
            return [(s["text"], s["label"]) for s in json.loads(response or "{}").get("samples", [])]
        except (ValueError, TypeError, KeyError):
            return []
