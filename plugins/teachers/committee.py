"""Teachers that check each other. A committee asks every member and accepts what they agree on; a disagreement
goes to a stronger (dearer) teacher, or to people (a low-confidence label that review and triage show first). A
cascade asks the cheap teacher first and sends only its low-confidence answers to the expensive one.

Members are written `NAME key=value ...` (the teacher's own options), several separated by `;`, e.g.
`members=llm model=openai/gpt-4o-mini; zeroshot`. Every member is asked through the run's ledger: its answers are
cached and recorded under its own model, and paid through the same USD gate; the committee's or cascade's own answer
is a verdict that costs nothing more."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from kdstudio.errors import KdError
from kdstudio.interfaces import CostEstimate, Doc, Option, TeachContext, Teacher, TeacherLabel
from kdstudio.plugins import get_plugins

# A disagreement sent to people is labelled with the plurality, at a confidence no higher than this, so that review
# (`--filter low-confidence`) and triage reach it first.
ESCALATED_CONFIDENCE = 0.5


def parse_members(spec: str, option: str) -> list[Teacher]:
    """Teachers from `NAME key=value ...; NAME ...`; anything else is one KdError naming the option."""
    members = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        try:
            name, *pairs = shlex.split(part)
        except ValueError as exc:  # an unclosed quote
            raise KdError(f"{option}: {part!r} cannot be read ({exc})",
                          f"quote whole values, e.g. {option}=llm model=openai/gpt-4o-mini") from None
        options = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise KdError(f"{option}: {pair!r} is not KEY=VALUE", f"e.g. {option}=llm model=openai/gpt-4o-mini")
            options[key] = value
        cls = get_plugins().get("teacher", name).cls
        if getattr(cls, "consults", False):
            raise KdError(f"{option}: {name} is itself made of teachers", "name plain teachers as members")
        members.append(cls(**options))
    return members


def parse_one(spec: str, option: str) -> Teacher:
    """Exactly one teacher from `NAME key=value ...`."""
    members = parse_members(spec, option)
    if len(members) != 1:
        raise KdError(f"{option} names {len(members) or 'no'} teacher{'s' if len(members) != 1 else ''}; it takes one",
                      f"e.g. {option}=llm model=openai/gpt-4o-mini")
    return members[0]


def _answer(doc_id: str, label: str | None, confidence: float | None, labels: list[str], record: dict[str, Any],
            error: str | None = None, transient: bool = False) -> TeacherLabel:
    probs = None
    if label is not None and confidence is not None:
        rest = (1.0 - confidence) / max(1, len(labels) - 1)
        probs = {x: confidence if x == label else rest for x in labels}
    return TeacherLabel(doc_id, label, confidence, probs, response=json.dumps(record), error=error, latency_s=0.0,
                        transient=transient)


def _unreached(doc_id: str, labels: list[str], record: dict[str, Any], why: TeacherLabel) -> TeacherLabel:
    """A member failed for now (a timeout, a rate limit): the verdict is not reached, so it is a transient failure
    that the ledger never serves from its cache, and a later run asks again."""
    return _answer(doc_id, None, None, labels, {**record, "verdict": "not reached"},
                   f"not reached: a member failed for now ({why.error})", transient=True)


class _Composite(Teacher):
    consults = True
    log_prompts = False

    def _members(self) -> list[Teacher]:
        raise NotImplementedError

    @property
    def parts(self) -> list[Teacher]:
        """The member teachers, parsed from the options on first use."""
        if not hasattr(self, "_parts"):
            self._parts = self._members()
        return self._parts

    @property
    def simulated(self) -> bool:  # type: ignore[override]
        return any(m.simulated for m in self.parts)

    @property
    def examples_wanted(self) -> int:
        return max((m.examples_wanted for m in self.parts), default=0)

    @property
    def wants_difficulty(self) -> bool:
        return any(m.wants_difficulty for m in self.parts)

    def askable(self) -> list[Teacher]:
        """Every teacher this one may ask."""
        return self.parts

    def check_ready(self) -> None:
        for member in self.askable():
            member.check_ready()

    def access(self) -> str:
        return "; ".join(f"{m.model_name}: {m.access()}" for m in self.askable())

    def needed(self) -> list[Teacher]:
        """The members every verdict needs (the cheapest verdict asks exactly these)."""
        return self.parts

    def estimate(self, docs: Sequence[Doc], context: TeachContext, n_docs: int) -> CostEstimate:
        """Every teacher it may ask, asked about every document: the estimate is high where members agree (or the
        first of a cascade is sure), and the bound is the worst case."""
        parts = {id(m): m.estimate(docs, context, n_docs) for m in self.askable()}
        values = list(parts.values())
        return CostEstimate(n_docs, sum(p.tokens_in_per_doc for p in values),
                            sum(p.tokens_out_per_doc for p in values), sum(p.usd_per_doc for p in values),
                            "; ".join(dict.fromkeys(p.price_source for p in values)), all(p.priced for p in values),
                            sum(parts[id(m)].reserve_min_usd for m in self.needed()),
                            sum(p.reserve_max_usd * p.tries_max for p in values), 1)

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        # The members' own requests (never their server addresses or keys) and how their answers are combined.
        return {"teacher": self.name, "members": [m.request(doc, context) for m in self.parts],
                "combine": self._combine_key(doc, context)}

    def _combine_key(self, doc: Doc, context: TeachContext) -> Any:
        raise NotImplementedError

    @staticmethod
    def _ask(context: TeachContext, member: Teacher, docs: Sequence[Doc]) -> dict[str, TeacherLabel]:
        if context.consult is None:
            raise KdError("a committee or cascade runs inside a distill run", "use it with `kdstudio distill`")
        return context.consult(member, docs) if docs else {}


class CommitteeTeacher(_Composite):
    """Several teachers answer; agreement is accepted, disagreement goes to a stronger teacher or to people."""

    name = "committee"
    options = (
        Option("members", str, "", "the teachers that vote: NAME key=value ...; NAME ... (two or more)"),
        Option("escalate", str, "people", "who settles a disagreement: people, or a teacher (NAME key=value ...)"),
    )

    def _members(self) -> list[Teacher]:
        members = parse_members(self.members, "members")
        if len(members) < 2:
            raise KdError("a committee needs two or more members", "e.g. --teacher-option 'members=llm model=A; "
                                                                    "llm model=B'")
        return members

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.referee = None if self.escalate == "people" else parse_one(self.escalate, "escalate")

    def _combine_key(self, doc: Doc, context: TeachContext) -> Any:
        return "people" if self.referee is None else self.referee.request(doc, context)

    @property
    def model_name(self) -> str:
        return f"committee({', '.join(m.model_name for m in self.parts)})"

    def askable(self) -> list[Teacher]:
        return self.parts + ([self.referee] if self.referee is not None else [])

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        """A verdict only where the committee's rule was carried out: every member voted, and a disagreement was
        settled by the referee (or sent to people). A document that the budget kept from a member or from the
        referee gets no answer at all: nothing is stored or counted for it, and a resume completes it from the
        members' answers already in the ledger."""
        votes = [self._ask(context, m, docs) for m in self.parts]
        voted = [d for d in docs if all(d.id in v for v in votes)]
        split = [d for d in voted if not _agreed([v[d.id] for v in votes])]
        settled = self._ask(context, self.referee, split) if self.referee is not None else {}
        for doc in voted:
            said = [(m.model_name, v[doc.id]) for m, v in zip(self.parts, votes, strict=True)]
            record: dict[str, Any] = {"votes": [[model, a.label] for model, a in said]}
            answers = [a for _, a in said]
            if failed := next((a for a in answers if a.transient), None):
                yield _unreached(doc.id, context.labels, record, failed)
            elif _agreed(answers):
                confidence = sum(a.confidence or 1.0 for a in answers) / len(answers)
                yield _answer(doc.id, answers[0].label, confidence, context.labels, {**record, "verdict": "agreed"})
            elif self.referee is not None:
                if doc.id in settled:
                    yield self._settled(doc.id, settled[doc.id], context.labels, record)
            else:
                yield self._for_people(doc.id, answers, context.labels, record)

    def _settled(self, doc_id: str, ref: TeacherLabel, labels: list[str], record: dict[str, Any]) -> TeacherLabel:
        assert self.referee is not None
        record = {**record, "referee": [self.referee.model_name, ref.label]}
        if ref.transient:
            return _unreached(doc_id, labels, record, ref)
        if ref.label is None:
            return _answer(doc_id, None, None, labels, {**record, "verdict": "the referee gave no label"},
                           f"the members disagreed and the referee gave no label: {ref.error}")
        return _answer(doc_id, ref.label, ref.confidence, labels,
                       {**record, "verdict": f"settled by {self.referee.model_name}"})

    @staticmethod
    def _for_people(doc_id: str, answers: list[TeacherLabel], labels: list[str],
                    record: dict[str, Any]) -> TeacherLabel:
        usable = [a.label for a in answers if a.label is not None]
        if not usable:
            return _answer(doc_id, None, None, labels, record, "no committee member gave a label")
        top, n = Counter(usable).most_common(1)[0]
        return _answer(doc_id, top, ESCALATED_CONFIDENCE * n / len(answers), labels,
                       {**record, "verdict": "disagreed: for people"})


def _agreed(answers: list[TeacherLabel]) -> bool:
    """Every member gave a label, and the same one: a member that failed is no vote for anything."""
    return all(a.label is not None for a in answers) and len({a.label for a in answers}) == 1


class CascadeTeacher(_Composite):
    """The cheap teacher answers first; only its low-confidence answers go to the expensive one."""

    name = "cascade"
    options = (
        Option("first", str, "", "the cheap teacher: NAME key=value ..."),
        Option("then", str, "", "the expensive teacher, asked where the first is unsure: NAME key=value ..."),
        Option("below", float, 0.8, "the first teacher's confidence under which the second is asked",
               low=0.0, high=1.0),
    )

    def _members(self) -> list[Teacher]:
        if not self.first.strip(" ;") or not self.then.strip(" ;"):
            raise KdError("a cascade needs a first and a then teacher",
                          "e.g. --teacher-option 'first=llm model=A' --teacher-option 'then=llm model=B'")
        return [parse_one(self.first, "first"), parse_one(self.then, "then")]

    def _combine_key(self, doc: Doc, context: TeachContext) -> Any:
        return {"below": self.below}

    def needed(self) -> list[Teacher]:
        return self.parts[:1]

    @property
    def model_name(self) -> str:
        cheap, dear = self.parts
        return f"cascade({cheap.model_name} -> {dear.model_name} below {self.below})"

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        """The first teacher's answer where it is sure; the second's where it is not. A document the budget kept
        from the second teacher gets no answer at all (never the first teacher's unsure one): a resume completes
        it."""
        cheap, dear = self.parts
        first = self._ask(context, cheap, docs)
        unsure = [d for d in docs if d.id in first and not first[d.id].transient
                  and (first[d.id].label is None or (first[d.id].confidence or 0.0) < self.below)]
        second = self._ask(context, dear, unsure)
        asked_on = {d.id for d in unsure}
        for doc in docs:
            if doc.id not in first or (doc.id in asked_on and doc.id not in second):
                continue
            cheap_said = first[doc.id]
            record: dict[str, Any] = {cheap.model_name: cheap_said.label}
            if cheap_said.transient:
                yield _unreached(doc.id, context.labels, {**record, "by": None}, cheap_said)
                continue
            if doc.id not in asked_on:
                yield _answer(doc.id, cheap_said.label, cheap_said.confidence, context.labels,
                              {**record, "by": cheap.model_name})
                continue
            dear_said = second[doc.id]
            record = {**record, dear.model_name: dear_said.label, "by": dear.model_name}
            if dear_said.transient:
                yield _unreached(doc.id, context.labels, record, dear_said)
            else:
                yield _answer(doc.id, dear_said.label, dear_said.confidence, context.labels, record,
                              None if dear_said.label is not None else
                              f"the first teacher was unsure and the second gave no label: {dear_said.error}")
