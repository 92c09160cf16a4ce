"""Does the teacher know what it is doing? Asked for free (a local teacher) before a run buys anything: its agreement
with the labels people gave and with the data's own (gold) labels, and whether its confidences can tell the labels
apart at all. A teacher at chance is said to be so, with the figures, instead of being distilled in silence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdstudio.check import baseline, guessing
from kdstudio.estimates import wilson
from kdstudio.interfaces import Doc, TeachContext, Teacher, TeacherLabel

SAMPLE = 200
# Labels a verdict of guessing needs at least: with fewer, even a fair teacher's interval reaches chance.
GUESS_EVIDENCE = 30
GUESSING_ADVICE = ("give each label a description in kdstudio.toml (description = \"what belongs here\"), use another "
                   "teacher (an LLM: --model PROVIDER/MODEL), or label documents yourself in Triage (kdstudio tui)")
GUESSING_FIX = f"Fix: {GUESSING_ADVICE}"
# Below this share of the way from chance to certainty, the average confidence says the teacher cannot separate the
# labels (e.g. 3 labels: a mean top probability under 0.43).
SEPARATION = 0.15
# A teacher that gives one label to this share of a sample of a project with several labels is not reading them.
COLLAPSE = 0.9


def _answers(teacher: Teacher, docs: Sequence[Doc], context: TeachContext) -> dict[str, TeacherLabel]:
    return {a.doc_id: a for a in teacher.label(list(docs), context) if a.label is not None}


def agreement(answers: dict[str, TeacherLabel], truth: dict[str, str]) -> tuple[float, int] | None:
    judged = [d for d in truth if d in answers]
    if not judged:
        return None
    return float(np.mean([answers[d].label == truth[d] for d in judged])), len(judged)


def confidence_warnings(answers: Sequence[TeacherLabel], labels: list[str]) -> list[str]:
    """What the teacher's own answers on a pool sample say: confidences near chance, or one label for nearly all."""
    k = len(labels)
    warnings: list[str] = []
    confidences = [a.confidence for a in answers if a.confidence is not None]
    if len(confidences) >= 30 and k >= 2:
        mean = float(np.mean(confidences))
        if mean < 1 / k + SEPARATION * (1 - 1 / k):
            warnings.append(f"its mean confidence is {mean:.2f} with {k} labels (chance {1 / k:.2f}): it cannot tell "
                            f"the labels apart. {GUESSING_FIX}")
    if len(answers) >= 30 and k >= 2:
        counts = np.unique([a.label for a in answers], return_counts=True)
        top = int(counts[1].argmax())
        if counts[1][top] / len(answers) >= COLLAPSE:
            warnings.append(f"it gives {counts[0][top]!r} to {counts[1][top]} of {len(answers)} pool documents")
    return warnings


def chance_line(labels: list[str], truth: dict[str, str]) -> str:
    values = list(truth.values())
    majority = max(values.count(x) for x in set(values)) / len(values)
    return f"chance {1 / len(labels):.2f}, always the commonest label {majority:.2f}"


@dataclass(frozen=True)
class Verdict:
    """What the free check found: agreement per kind of truth, warnings, and, where the labels people or the data
    gave show the teacher no better than a guess, the line that refuses it."""

    found: list[tuple[str, float, int]]
    warnings: list[str]
    guessing: str | None = None


def check(teacher: Teacher, context: TeachContext, labels: list[str], docs: Sequence[Doc], pool: set[str],
          human: dict[str, str], gold: dict[str, str]) -> Verdict:
    """Ask the teacher about `docs` (a sample of pool documents and of documents with human or gold labels) and say
    what its answers show."""
    answers = _answers(teacher, docs, context)
    warnings = list(teacher.caveats(context))
    found: list[tuple[str, float, int]] = []
    refusal = None
    for kind, truth in (("human", human), ("gold", gold)):
        truth = {d: x for d, x in truth.items() if d in answers}
        result = agreement(answers, truth)
        if result is None:
            continue
        found.append((kind, *result))
        share, n = result
        interval = wilson(round(share * n), n, "people" if kind == "human" else kind)
        if n >= GUESS_EVIDENCE and guessing(interval, baseline(labels, list(truth.values()))):
            warnings.append(f"it agrees with {interval.text()} of the {kind} labels ({chance_line(labels, truth)}): "
                            "it is guessing, no better than chance or than always answering the commonest label. "
                            f"{GUESSING_FIX}")
            refusal = refusal or (f"the teacher {teacher.model_name} agrees with {interval.text()} of the {kind} "
                                  f"labels ({chance_line(labels, truth)}): it cannot be told from guessing, so no "
                                  "training label was bought from it")
    warnings += confidence_warnings([a for d, a in answers.items() if d in pool], labels)
    return Verdict(found, warnings, refusal)
