"""A third-party kdstudio plugin: the smallest useful teacher. It shows the whole contract a plugin meets:
a module with a `hookimpl`, registered under the `kdstudio` entry-point group of its own distribution."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from kdstudio.hookspecs import hookimpl
from kdstudio.interfaces import Doc, Option, TeachContext, Teacher, TeacherLabel


class KeywordTeacher(Teacher):
    """Labels a document by counting keyword hits per label; free, instant, and as good as its rules."""

    name = "keywords"
    options = (
        Option("rules", str, "", "label=word|word;label=word, e.g. sports=match|goal;tech=chip|software"),
        Option("min_hits", int, 1, "fewer hits than this and the teacher abstains"),
    )

    def _patterns(self) -> dict[str, re.Pattern[str]]:
        patterns = {}
        for rule in filter(None, (r.strip() for r in self.rules.split(";"))):
            label, _, words = rule.partition("=")
            alternatives = "|".join(re.escape(w.strip()) for w in words.split("|") if w.strip())
            patterns[label.strip()] = re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)
        return patterns

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        patterns = {k: v for k, v in self._patterns().items() if k in context.labels}
        for doc in docs:
            hits = {label: len(p.findall(doc.text)) for label, p in patterns.items()}
            total = sum(hits.values())
            if total < self.min_hits:
                yield TeacherLabel(doc.id, None, error="no keyword matched")
                continue
            probs = {label: n / total for label, n in hits.items()}
            best = max(probs, key=probs.__getitem__)
            yield TeacherLabel(doc.id, best, confidence=probs[best], probs=probs, response=best)


@hookimpl
def register_teachers(register):
    register(KeywordTeacher)
