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
    """Teachers from `NAME key=value ...; NAME ...`."""
    members = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        name, *pairs = shlex.split(part)
        options = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise KdError(f"{option}: {pair!r} is not KEY=VALUE", f"e.g. {option}=llm model=openai/gpt-4o-mini")
            options[key] = value
        cls = get_plugins().get("teacher", name).cls
        if getattr(cls, "consults", False):
            raise KdError(f"{option}: {name} is itself made of teachers", "name plain teachers as members")
        members.append(cls(**options))
    return members


def _answer(doc_id: str, label: str | None, confidence: float | None, labels: list[str], record: dict[str, Any],
            error: str | None = None) -> TeacherLabel:
    probs = None
    if label is not None and confidence is not None:
        rest = (1.0 - confidence) / max(1, len(labels) - 1)
        probs = {x: confidence if x == label else rest for x in labels}
    return TeacherLabel(doc_id, label, confidence, probs, response=json.dumps(record), error=error, latency_s=0.0)


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

    def estimate(self, docs: Sequence[Doc], context: TeachContext, n_docs: int) -> CostEstimate:
        """An upper bound: every teacher it may ask, asked about every document."""
        parts = [m.estimate(docs, context, n_docs) for m in self.askable()]
        return CostEstimate(n_docs, sum(p.tokens_in_per_doc for p in parts), sum(p.tokens_out_per_doc for p in parts),
                            sum(p.usd_per_doc for p in parts), "; ".join(dict.fromkeys(p.price_source for p in parts)),
                            all(p.priced for p in parts))

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
        self.referee = None if self.escalate == "people" else parse_members(self.escalate, "escalate")[0]

    def _combine_key(self, doc: Doc, context: TeachContext) -> Any:
        return "people" if self.referee is None else self.referee.request(doc, context)

    @property
    def model_name(self) -> str:
        return f"committee({', '.join(m.model_name for m in self.parts)})"

    def askable(self) -> list[Teacher]:
        return self.parts + ([self.referee] if self.referee is not None else [])

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        votes = [self._ask(context, m, docs) for m in self.parts]
        split = [d for d in docs if len({v[d.id].label for v in votes if d.id in v} - {None}) > 1]
        settled = self._ask(context, self.referee, split) if self.referee is not None else {}
        for doc in docs:
            said = [(m.model_name, v[doc.id]) for m, v in zip(self.parts, votes, strict=True) if doc.id in v]
            record: dict[str, Any] = {"votes": [[model, a.label] for model, a in said]}
            usable = [a for _, a in said if a.label is not None]
            if not said:
                continue  # no member was sent this document (the budget stopped them)
            if not usable:
                yield _answer(doc.id, None, None, context.labels, record, "no committee member gave a label")
                continue
            counts = Counter(a.label for a in usable)
            top, n = counts.most_common(1)[0]
            if len(counts) == 1:
                confidence = sum(a.confidence or 1.0 for a in usable) / len(usable)
                yield _answer(doc.id, top, confidence, context.labels, {**record, "verdict": "agreed"})
            elif doc.id in settled and settled[doc.id].label is not None:
                ref = settled[doc.id]
                yield _answer(doc.id, ref.label, ref.confidence, context.labels,
                              {**record, "verdict": f"settled by {self.referee.model_name}"})  # type: ignore[union-attr]
            else:
                share = n / len(usable)
                yield _answer(doc.id, top, ESCALATED_CONFIDENCE * share, context.labels,
                              {**record, "verdict": "disagreed: for people"})


class CascadeTeacher(_Composite):
    """The cheap teacher answers first; only its low-confidence answers go to the expensive one."""

    name = "cascade"
    options = (
        Option("first", str, "", "the cheap teacher: NAME key=value ..."),
        Option("then", str, "", "the expensive teacher, asked where the first is unsure: NAME key=value ..."),
        Option("below", float, 0.8, "the first teacher's confidence under which the second is asked"),
    )

    def _members(self) -> list[Teacher]:
        if not self.first or not self.then:
            raise KdError("a cascade needs a first and a then teacher",
                          "e.g. --teacher-option 'first=llm model=A' --teacher-option 'then=llm model=B'")
        return [parse_members(self.first, "first")[0], parse_members(self.then, "then")[0]]

    def _combine_key(self, doc: Doc, context: TeachContext) -> Any:
        return {"below": self.below}

    @property
    def model_name(self) -> str:
        cheap, dear = self.parts
        return f"cascade({cheap.model_name} -> {dear.model_name} below {self.below})"

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        cheap, dear = self.parts
        first = self._ask(context, cheap, docs)
        unsure = [d for d in docs if d.id in first and (first[d.id].label is None
                                                        or (first[d.id].confidence or 0.0) < self.below)]
        second = self._ask(context, dear, unsure)
        for doc in docs:
            if doc.id not in first:
                continue
            answer = second.get(doc.id) if doc.id in second and second[doc.id].label is not None else first[doc.id]
            by = dear if answer is second.get(doc.id) else cheap
            yield _answer(doc.id, answer.label, answer.confidence, context.labels,
                          {"by": by.model_name, cheap.model_name: first[doc.id].label,
                           **({dear.model_name: second[doc.id].label} if doc.id in second else {})},
                          None if answer.label is not None else answer.error)
