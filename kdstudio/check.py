"""The check sample: documents drawn at random from the pool, labelled by people, never trained on and never offered
to a selector (they leave the pool for the `check` split), so that what they say about a student or a teacher is an
unbiased estimate on the user's own data. Gold labels stand in for people where a corpus brings them (benchmarks);
every figure says which truth it rests on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kdstudio.estimates import Estimate, Proxy, bootstrap_macro_f1, ppi_mean, wilson
from kdstudio.store import Ledger, RunLabel, Store
from kdstudio.store.gold_labels import GoldLabels

# Fewer than this many checked documents give intervals too wide to say anything; below it a report says how many
# more are needed instead of a figure.
MIN_CHECKED = 10
# PPI's interval is the normal (CLT) one: for a share near 0.9 it was too narrow at 50 checked documents (it held
# the truth in 88-91% of draws on bbc-news, docs/benchmarks.md), so below this many only the sample's is given.
PPI_MIN_CHECKED = 100
# Resamples of the macro-F1 bootstrap: enough for a 95% interval to two decimals, cheap enough for every round.
F1_RESAMPLES = 400
# Checked documents a label needs before the macro-F1 interval is trusted: below it a label's F1 swings between 0 and 1
# on a single document, and the interval held the truth too rarely (benchmarks/f1_interval.py), so the figure says so.
THIN = 5
TOO_NARROW = "so this interval may be too narrow"
# Unchecked documents whose student answers PPI borrows: beyond a few thousand the n checked ones set the width.
# A student that reads texts (a fine-tuned transformer) pays seconds per hundred documents, so it is asked about fewer.
BORROW_LIMIT = 5000
BORROW_LIMIT_TEXTS = 500


@dataclass(frozen=True)
class CheckTruth:
    """The reference labels of the check sample: people's where they gave one, else gold; `unlabelled` the sample's
    documents that have neither yet (PPI may borrow the student's answers on them)."""

    labels: dict[str, str]  # doc id -> label
    by_people: int
    by_gold: int
    unlabelled: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        if self.by_people and self.by_gold:
            return "people and gold"
        return "people" if self.by_people else "gold"

    def counts(self, size: int) -> dict[str, int]:
        """The sample in numbers, as `status` shows it: `size` documents, how many have a reference label, whose."""
        return {"size": size, "checked": len(self.labels), "by_people": self.by_people, "by_gold": self.by_gold}

    @classmethod
    def of(cls, check_ids: list[str], human: Mapping[str, str], gold: Mapping[str, str]) -> CheckTruth:
        labels: dict[str, str] = {}
        people = 0
        for doc in check_ids:
            if doc in human:
                labels[doc], people = human[doc], people + 1
            elif doc in gold:
                labels[doc] = gold[doc]
        return cls(labels, people, len(labels) - people, tuple(d for d in check_ids if d not in labels))


@dataclass(frozen=True)
class Grades:
    """A student (and its teacher) graded on the check sample. `student_ppi` is None below PPI_MIN_CHECKED checked
    documents, or where no unchecked document gives PPI something to borrow."""

    n: int
    truth: str
    student_accuracy: Estimate
    student_macro_f1: Estimate
    student_ppi: Estimate | None
    teacher_accuracy: Estimate | None
    baseline: float  # the better of chance and always answering the commonest label, on the checked sample
    # Checked documents the run's teacher answered: a run asks it about those checked when it starts, so a sample
    # drawn or labelled later has none (or too few for teacher_accuracy) until the next run.
    teacher_judged: int

    @property
    def best_accuracy(self) -> Estimate:
        """The tightest valid estimate of the student's accuracy."""
        return narrower(self.student_accuracy, self.student_ppi)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "truth": self.truth, "baseline": self.baseline,
                "student_accuracy": self.student_accuracy.as_dict(),
                "student_macro_f1": self.student_macro_f1.as_dict(),
                "student_accuracy_ppi": None if self.student_ppi is None else self.student_ppi.as_dict(),
                "teacher_accuracy": None if self.teacher_accuracy is None else self.teacher_accuracy.as_dict(),
                "teacher_judged": self.teacher_judged}


@dataclass(frozen=True)
class CheckDraw:
    drawn: int  # documents added by this draw
    size: int  # documents in the check sample now
    touched: int = 0  # pool documents it could not draw from: labelled or sent to a teacher already
    pool: int = 0  # imported pool documents before the draw, touched or not

    def lean(self) -> str | None:
        """What a user should know when runs had already bought part of the pool: the draw leans away from it."""
        if not self.drawn or not self.touched:
            return None
        return (f"{self.touched:,} of the pool's {self.pool:,} documents ({self.touched / self.pool:.0%}) were "
                "already labelled or sent to a teacher and could not be drawn: the sample leans towards what no "
                "selector chose (most choose the hard documents), so its estimates may read high; a sample drawn "
                "before the first run has no such lean")


@dataclass(frozen=True)
class CheckReport:
    """What `kdstudio check` shows: the sample, and where a student and enough checked labels exist, the grades of
    that student and of the teacher of its run."""

    size: int
    truth: CheckTruth
    grades: Grades | None = None
    student: dict[str, Any] | None = None  # the graded student's record (id, run_id, round, kind, ...)
    teacher: str | None = None

    @property
    def needed(self) -> int:
        """Checked labels still missing before a figure can be given."""
        return max(0, MIN_CHECKED - len(self.truth.labels))


def narrower(sample: Estimate, ppi: Estimate | None) -> Estimate:
    """The narrower of the sample's estimate and PPI's (where there is one): both are valid, the narrower says more."""
    return ppi if ppi is not None and ppi.width < sample.width else sample


def check_truth(store: Store, gold: Mapping[str, str]) -> CheckTruth:
    """The project's check sample with its reference labels, as they stand now."""
    check = store.ids_in_split("check")
    if isinstance(gold, GoldLabels):
        gold.prefetch(check)
    return CheckTruth.of(check, dict(Ledger(store).human_examples()), gold)


def grade_run_student(labels: list[str], truth: CheckTruth, ledger: Ledger, run_id: int, borrowable: list[str],
                      predict_proba: Callable[[list[str]], np.ndarray], *, seed: int = 0,
                      limit: int = BORROW_LIMIT) -> Grades | None:
    """A student of run `run_id` graded on the check sample, with the teacher answers that run holds on the checked
    documents (the teacher's accuracy, PPI's rectifier) and on `borrowable`: random documents never trained on nor
    selected (the validation split, the sample's unlabelled documents), whose answers PPI borrows (the student's on at
    most `limit` of those the teacher did not answer). `predict_proba` gives the student's probabilities, in
    `labels`' order. None below MIN_CHECKED."""
    checked = sorted(truth.labels)
    if len(checked) < MIN_CHECKED:
        return None
    candidates = [d for d in dict.fromkeys(borrowable) if d not in truth.labels]
    teacher = ledger.run_teacher_answers(run_id, checked + candidates)
    answered = [d for d in candidates if d in teacher]
    unanswered = [d for d in candidates if d not in teacher]
    if len(checked) < PPI_MIN_CHECKED:
        answered, unanswered = [], []
    elif len(unanswered) > limit:
        keep = np.random.default_rng([seed, 4099]).choice(len(unanswered), limit, replace=False)
        unanswered = [unanswered[i] for i in sorted(keep)]
    ids = checked + answered + unanswered
    student = dict(zip(ids, np.asarray(predict_proba(ids), dtype=float), strict=True))
    return grade(labels, truth, student, teacher, answered + unanswered, seed=seed)


def teacher_belief(answer: RunLabel, label: str, n_labels: int) -> float:
    """The teacher's probability that `label` is right: from its probabilities where it gave them, else its
    confidence in its own answer (the rest shared by the other labels), else 1 or 0 for agreeing with it. PPI's proxy
    for "the student is right": on bbc-news, Reuters R8 and 20newsgroups it tracked the truth better than agreement
    alone, so PPI's interval came out narrower (docs/benchmarks.md); any proxy keeps PPI valid, a better one only
    narrows it."""
    if answer.probs:
        total = sum(max(0.0, float(p)) for p in answer.probs.values())
        if total > 0:
            return max(0.0, float(answer.probs.get(label, 0.0))) / total
    if answer.confidence is not None and 0.0 <= answer.confidence <= 1.0:
        if answer.label == label:
            return float(answer.confidence)
        return (1.0 - float(answer.confidence)) / max(1, n_labels - 1)
    return float(answer.label == label)


def baseline(labels: list[str], truth: list[str]) -> float:
    """What a guess achieves: 1/k, or always answering the commonest label, whichever is higher."""
    values, counts = np.unique(truth, return_counts=True)
    return max(1 / len(labels), float(counts.max()) / len(truth)) if len(values) else 1 / len(labels)


def grade(labels: list[str], truth: CheckTruth, student: Mapping[str, np.ndarray], teacher: Mapping[str, RunLabel],
          borrowed: Sequence[str] = (), *, seed: int = 0) -> Grades | None:
    """Grade a student against the check truth by its probabilities (`student`: doc -> probabilities in `labels`'
    order, on every checked and borrowed document), and its teacher by its answers (`teacher`, where it answered).
    `borrowed`: unchecked documents drawn from the same pool, never trained on, that PPI borrows proxies from: the
    teacher's belief in the student's answer where the teacher answered (and answered every checked document), the
    student's own confidence on the others. None below MIN_CHECKED."""
    ids = sorted(truth.labels)
    if len(ids) < MIN_CHECKED:
        return None
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[truth.labels[d]] for d in ids])
    pred = np.array([int(np.argmax(student[d])) for d in ids])
    right = pred == y
    accuracy = wilson(int(right.sum()), len(ids), truth.kind)
    f1 = macro_f1_caveats(bootstrap_macro_f1(y, pred, truth.kind, reps=F1_RESAMPLES, seed=seed), labels, y)
    judged = [d for d in ids if d in teacher]
    teacher_accuracy = (wilson(sum(teacher[d].label == truth.labels[d] for d in judged), len(judged), truth.kind)
                        if len(judged) >= MIN_CHECKED else None)
    proxies = ppi_proxies(labels, ids, student, teacher, borrowed, teacher_on_all=len(judged) == len(ids))
    ppi = None
    if len(ids) >= PPI_MIN_CHECKED and proxies:
        try:
            ppi = ppi_mean(right, proxies, truth.kind)
        except ValueError:  # no proxy varies: nothing to borrow
            ppi = None
    return Grades(len(ids), truth.kind, accuracy, f1, ppi, teacher_accuracy,
                  baseline(labels, [truth.labels[d] for d in ids]), len(judged))


def macro_f1_caveats(f1: Estimate, labels: list[str], y: np.ndarray) -> Estimate:
    """Macro F1 with what its interval rests on, where it is less than a 95% interval: where some label has fewer than
    THIN checked documents the interval held the truth in 78-91% of draws rather than 95% (20 or 52 labels on 50-200
    checked documents, benchmarks/f1_interval.py); where every resample gives the same figure (a student right on
    every checked document) the bootstrap has nothing to widen it with, and [1.0, 1.0] is no certainty. The figure
    says so rather than look as sure as the others."""
    said = []
    thin = int((np.bincount(y, minlength=len(labels)) < THIN).sum())
    if thin:
        said.append(f"{thin} of {len(labels)} labels have fewer than {THIN} checked documents")
    if f1.width == 0:
        said.append("every resample of the checked documents gives the same figure")
    if not said:
        return f1
    return replace(f1, method=f"{f1.method}; {' and '.join(said)}, {TOO_NARROW}")


def ppi_proxies(labels: list[str], checked: list[str], student: Mapping[str, np.ndarray],
                teacher: Mapping[str, RunLabel], borrowed: Sequence[str], *, teacher_on_all: bool) -> list[Proxy]:
    """PPI's guesses at "the student is right": the teacher's belief in the student's answer on the borrowed
    documents it answered (only when it answered every checked one too), the student's probability for its own answer
    on those it did not. Never the student's on documents its run validated on: the run chose its student by them.
    The two sets do not overlap, as ppi_mean asks."""
    def answer(d: str) -> str:
        return labels[int(np.argmax(student[d]))]

    def confidence(d: str) -> float:
        return float(np.max(student[d]))

    by_teacher = [d for d in borrowed if d in teacher] if teacher_on_all else []
    by_student = [d for d in borrowed if d not in teacher]
    proxies = []
    if len(by_teacher) >= 2:
        proxies.append(Proxy.of("teacher", [teacher_belief(teacher[d], answer(d), len(labels)) for d in checked],
                                [teacher_belief(teacher[d], answer(d), len(labels)) for d in by_teacher]))
    if len(by_student) >= 2:
        proxies.append(Proxy.of("student", [confidence(d) for d in checked], [confidence(d) for d in by_student]))
    return proxies


def guessing(accuracy: Estimate, base: float) -> bool:
    """A teacher whose 95% interval reaches down to what a guess achieves cannot be told from guessing."""
    return accuracy.low <= base
