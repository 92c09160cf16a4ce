"""`method = auto`: how a run trains, chosen by the data rather than by kdstudio's own benchmarks.

Every recipe trains on the same labels, so choosing costs no teacher call.
Each search fits a few training recipes (the student's regularization, training that doubts its labels, self-training,
the teacher's soft labels, fused labels) and keeps the one that is right most often on the labels the run trusts most
(people's labels on the check sample and gold labels on the validation documents; with neither, the teacher's own
validation labels, and then the choice only follows agreement with the teacher, said as such), where it clearly beats
the baseline (the run's own settings on fused labels, kdstudio.label_fusion, self-trained where trusted labels validate
the pseudo-labels); otherwise the baseline trains the round.
Searching is greedy and not done every round: once at the first round and again each time the labels have grown by
half, so that its cost grows with the logarithm of the budget; the rounds between train the last choice.
Selection is changed in one case only: while the trusted labels cannot tell the latest student from a guess (its
accuracy's 95% interval reaches chance or always answering their commonest label) after ten training labels a class,
its uncertainty means nothing, and the next batch is chosen as the first was (the seed selector, random by default):
the cold start where uncertainty sampling falls below random (docs/benchmarks.md, the Slovenian opinions).
The run keeps its latest round unless an earlier one is clearly right more often on the trusted labels outside the
check sample (gold validation labels), never judged on the check sample itself, whose estimate of the kept student
would otherwise read high (`kept_on`); with the check sample the only trusted labels, the latest round; with only the
teacher's, the round with the lowest validation loss, like any run (kdstudio.run_state.judge_best).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from kdstudio.check import MIN_CHECKED, guessing
from kdstudio.check import baseline as guess_rate
from kdstudio.estimates import wilson

# The student's regularization is tried at these multiples of its own C (students with a C option only).
C_SCALES = (0.1, 1.0, 10.0)
# A new search once the training labels have grown by this factor since the last one.
SEARCH_GROWTH = 1.5
# How clearly a recipe must beat the baseline, in standard deviations of a sign test: one-sided about 98% for each of
# the up to nine challengers of a search, about 84% for the search as a whole (Bonferroni). At 1.0 a test (84% each),
# auto's choices cost 0.46 point against training its baseline every round (docs/benchmarks.md).
EVIDENCE = 2.0
# How clearly an earlier round must beat a newer one, trained on more labels, to stay the kept student (one-sided,
# about 98%, and at least two documents ahead): choosing rounds on 50 gold labels by accuracy alone picked luck.
KEEP_EVIDENCE = 2.0
# Training labels a class the run must have bought before a student no better than a guess changes selection: before
# that a weak student is the expected start, and its margins still find the classes it has not met (on Reuters R52 and
# 20newsgroups random batches in the first rounds cost up to 7 points in single runs; docs/benchmarks.md).
GUESS_AFTER_PER_CLASS = 10
# Runners-up a round line names (`--json` and `runs --json` have them all).
SHOWN = 3


@dataclass(frozen=True)
class Recipe:
    """One way to train on a round's labels."""

    c_scale: float = 1.0
    doubt: bool = False
    self_train: bool = False
    soft: bool = False
    fused: bool = False

    @property
    def name(self) -> str:
        parts = [f"C x{self.c_scale:g}"] if self.c_scale != 1.0 else []
        parts += [word for on, word in ((self.doubt, "doubt"), (self.self_train, "self-train"),
                                        (self.soft, "soft labels"), (self.fused, "fused labels")) if on]
        return " + ".join(parts) or "plain"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        return cls(**{k: data[k] for k in ("c_scale", "doubt", "self_train", "soft", "fused") if k in data})


@dataclass(frozen=True)
class Referee:
    """The labels recipes are judged on: document ids, their class indices, and whose labels they are."""

    ids: list[str]
    y: np.ndarray
    truth: str  # "people", "gold", "people and gold" or "teacher"

    @property
    def trusted(self) -> bool:
        return self.truth != "teacher"


def referee(check: Mapping[str, str], check_by_people: int, gold: Mapping[str, str], val_ids: Iterable[str],
            teacher_val: Mapping[str, str], label_index: Mapping[str, int]) -> Referee | None:
    """The check sample's reference labels plus gold on the validation documents; else the teacher's validation
    labels; None when the run has no labels to judge on at all."""
    trusted = {d: lab for d, lab in check.items() if lab in label_index}
    gold_val = {d: gold[d] for d in val_ids if d in gold and gold[d] in label_index}
    trusted.update(gold_val)
    if trusted:
        people = check_by_people > 0
        truth = "people and gold" if people and (gold_val or len(check) > check_by_people) else (
            "people" if people else "gold")
        labels = trusted
    elif teacher_val:
        truth, labels = "teacher", dict(teacher_val)
    else:
        return None
    ids = sorted(labels)
    return Referee(ids, np.array([label_index[labels[d]] for d in ids], dtype=np.int64), truth)


@dataclass(frozen=True)
class Judged:
    recipe: Recipe
    correct: int
    log_loss: float
    right: tuple[bool, ...] = ()  # per referee document, in the referee's order

    def clearly_beats(self, other: Judged) -> bool:
        return clearly_ahead(self.right, other.right)


def clearly_ahead(right: Sequence[bool], other: Sequence[bool], evidence: float = EVIDENCE) -> bool:
    """Paired evidence that one student is right more often than another, not luck on the referee's documents: of
    the documents exactly one of them gets right, the first one's lead is at least `evidence` standard deviations of
    a fair coin's (a sign test), and at least `evidence` documents (one at the least)."""
    wins = sum(a and not b for a, b in zip(right, other, strict=True))
    losses = sum(b and not a for a, b in zip(right, other, strict=True))
    return wins - losses >= max(1.0, evidence, evidence * math.sqrt(wins + losses))


def judge(recipe: Recipe, probs: np.ndarray, y: np.ndarray) -> Judged:
    clipped = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    right = probs.argmax(axis=1) == y
    return Judged(recipe, int(right.sum()), float(-np.log(clipped).mean()), tuple(bool(x) for x in right))


def best(judged: list[Judged]) -> Judged:
    """Right most often; among equals the lower log loss; among equals still, the one tried first (the simpler)."""
    return min(judged, key=lambda j: (-j.correct, j.log_loss))


def decide(tried: list[Judged], baseline: Recipe) -> Judged:
    """The best recipe tried where it clearly beats the baseline (the run's own settings); otherwise the baseline.
    Picking the best of several on a few dozen documents favours whichever was lucky there: without the evidence
    test, auto ended up to 2.6 points below margin alone (docs/benchmarks.md). The baseline is the run's settings at
    every search, not the last choice, so that a choice made on 20 labels by luck does not hold the rest of the run."""
    kept = next(j for j in tried if j.recipe == baseline)
    winner = best(tried)
    return winner if winner.recipe != baseline and winner.clearly_beats(kept) else kept


@dataclass(frozen=True)
class Abilities:
    """What the run can try: C only for students that have it, doubt and self-training where their plugins exist and
    the round has enough labels, soft labels where the teacher gave probabilities, fused labels where out-of-fold
    students can judge the labels; `trusted_free` where self-training's pseudo-labels are validated on people's or
    gold labels (the referee's) rather than on the teacher's."""

    c: bool
    doubt: bool
    self_train: bool
    soft: bool
    fused: bool = False
    trusted_free: bool = False


def baseline(configured: Recipe, abilities: Abilities) -> Recipe:
    """What auto trains with unless a recipe clearly beats it: the run's own settings, on fused labels where they can
    be made, self-trained where the pseudo-labels are validated on trusted labels. Fusing weighs each label by the
    teacher's calibrated belief and a student's view of it; with a teacher the trusted labels find always right it
    changes nothing (its calibrated belief is its label). Self-training adds only pseudo-labels at a confidence that
    is right 95% of the time on the trusted labels, and none where no confidence is. The other recipes need evidence
    to replace it; see docs/benchmarks.md for what each bought and lost across the benchmark matrix."""
    recipe = replace(configured, fused=True, soft=False) if abilities.fused else configured
    return replace(recipe, self_train=True) if abilities.self_train and abilities.trusted_free else recipe


def search(abilities: Abilities, fit_and_judge: Callable[[Recipe], Judged], baseline: Recipe = Recipe()
           ) -> tuple[Judged, list[Judged]]:
    """Greedy: the regularization first, on plain training; then, at that regularization, each other choice alone
    and doubt with self-training together; the baseline is always among them. Returns the choice (see `decide`)
    and everything tried, in order."""
    tried = [fit_and_judge(Recipe(scale)) for scale in (C_SCALES if abilities.c else (1.0,))]
    scale = best(tried).recipe.c_scale
    extras = [Recipe(scale, doubt=True)] if abilities.doubt else []
    extras += [Recipe(scale, self_train=True)] if abilities.self_train else []
    extras += [Recipe(scale, soft=True)] if abilities.soft else []
    extras += [Recipe(scale, doubt=True, self_train=True)] if abilities.doubt and abilities.self_train else []
    extras += [Recipe(scale, fused=True)] if abilities.fused else []
    extras += [Recipe(scale, fused=True, self_train=True)] if abilities.fused and abilities.self_train else []
    extras += [baseline] if baseline not in {j.recipe for j in tried} | set(extras) else []
    tried += [fit_and_judge(r) for r in extras]
    return decide(tried, baseline), tried


def last_choice(previous: list[Mapping[str, Any]]) -> Recipe:
    """The recipe the latest search chose, which the rounds until the next search train with."""
    return Recipe.from_dict(previous[-1]["recipe"])


def due(n_labels: int, previous: list[Mapping[str, Any]]) -> bool:
    """Whether a search is due: at the first round, and once the labels have grown by SEARCH_GROWTH since the last.
    `previous` holds the earlier rounds' `auto` metrics, oldest first."""
    searches = [p for p in previous if p.get("searched")]
    return not searches or n_labels >= SEARCH_GROWTH * searches[-1]["n_labels"]


def record(chosen: Judged, tried: list[Judged], referee_: Referee, n_labels: int, searched: bool,
           checked: Collection[str] = (), *, n_classes: int) -> dict[str, Any]:
    """What a round's metrics keep of the choice: the recipe, the evidence (each recipe's accuracy on the referee's
    labels) and whose labels those are; `kept_on`, the chosen student's accuracy on the trusted labels outside
    the check sample (`checked`), which the run's best round is chosen on (None where there are none); and `guess`,
    whether those labels tell it from a guess (`cold_start`)."""
    n = len(referee_.ids)
    outside = [i for i, d in enumerate(referee_.ids) if d not in checked] if referee_.trusted else []
    kept_on = None
    if outside and chosen.right:
        right = "".join("1" if chosen.right[i] else "0" for i in outside)
        kept_on = {"n": len(outside), "truth": "gold", "accuracy": right.count("1") / len(outside), "right": right}
    return {"recipe": chosen.recipe.as_dict(), "name": chosen.recipe.name, "truth": referee_.truth, "n": n,
            "accuracy": chosen.correct / n, "searched": searched, "n_labels": n_labels,
            "tried": {j.recipe.name: j.correct / n for j in tried}, "kept_on": kept_on,
            "guess": cold_start(chosen, referee_, n_classes, n_labels)}


def cold_start(chosen: Judged, referee_: Referee, n_classes: int, n_labels: int) -> dict[str, Any] | None:
    """Whether the trusted labels can tell the chosen student from a guess: the lower end of its accuracy's 95%
    interval (`low`) against the better of chance and always answering their commonest label (`rate`); `guessing`
    where they cannot, and `cold` where, on top of that, the run has bought GUESS_AFTER_PER_CLASS training labels a
    class: the next batch is then chosen as the first was. None where the referee is the teacher, or has fewer than
    MIN_CHECKED labels."""
    n = len(referee_.ids)
    if not referee_.trusted or n < MIN_CHECKED:
        return None
    accuracy = wilson(chosen.correct, n, referee_.truth)
    rate = guess_rate(list(range(n_classes)), referee_.y.tolist())
    at_guess = guessing(accuracy, rate)
    return {"low": accuracy.low, "rate": rate, "guessing": at_guess,
            "cold": at_guess and n_labels >= GUESS_AFTER_PER_CLASS * n_classes}


def selects_as_first(metrics: Mapping[str, Any]) -> bool:
    """Whether the round after the one with these metrics chooses its batch as the first round did."""
    auto = trusted_choice(metrics)
    return bool(auto and (auto.get("guess") or {}).get("cold"))


def kept_on(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The labels a round's student competes for the run's best round on (`n`, `truth`, `accuracy`, and `right`, one
    character a document): trusted labels outside the check sample; None where there are none. Runs recorded before
    `kept_on` existed competed on every trusted label, and still do when resumed."""
    auto = trusted_choice(metrics)
    return None if auto is None else auto.get("kept_on", auto)


def keeps_older(older: Mapping[str, Any], newer: Mapping[str, Any]) -> bool | None:
    """Whether a run keeps its best round so far over a newer one (`kept_on` of each): only where the older student
    is clearly right more often on the same gold documents (`clearly_ahead`), since the newer one trained on more
    labels: a stricter test than a recipe's (KEEP_EVIDENCE). None where the two were not judged on the same documents
    (the caller compares accuracies)."""
    a, b = older.get("right"), newer.get("right")
    if not a or not b or len(a) != len(b):
        return None
    return clearly_ahead([c == "1" for c in a], [c == "1" for c in b], KEEP_EVIDENCE)


def trusted_choice(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A round's `auto` record where it was judged on people's or gold labels (what the kept round is chosen on);
    None for a fixed run, or where only the teacher's labels judged."""
    auto = metrics.get("auto")
    return auto if auto and auto["truth"] != "teacher" else None


def text(auto: Mapping[str, Any] | None) -> str:
    """A round line's account of the choice: the recipe, its accuracy on whose labels, and the runners-up."""
    if not auto:
        return ""
    measure = "agree" if auto["truth"] == "teacher" else "acc"
    shown = f"  auto: {auto['name']} ({measure} {auto['accuracy']:.3f} on {auto['n']} {auto['truth']}"
    others = sorted(((acc, name) for name, acc in auto.get("tried", {}).items() if name != auto["name"]),
                    key=lambda x: -x[0])
    if auto.get("searched") and others:
        more = f", {len(others) - SHOWN} more" if len(others) > SHOWN else ""
        shown += f"; {', '.join(f'{name} {acc:.3f}' for acc, name in others[:SHOWN])}{more}"
    guess = auto.get("guess") or {}
    if guess.get("guessing"):
        then = ("so the next batch is chosen as the first" if guess["cold"] else
                f"but under {GUESS_AFTER_PER_CLASS} labels a class the selector keeps choosing")
        shown += f"; no better than a guess: its {guess_evidence(guess)}, {then}"
    return shown + ")"


def warning(auto: Mapping[str, Any] | None) -> str | None:
    """After the run, where the kept round's student could not be told from a guess on the trusted labels: a run that
    bought labels and trained nothing useful must not read as done. None where it could, or nothing trusted judged."""
    guess = (auto or {}).get("guess") or {}
    if not guess.get("guessing"):
        return None
    assert auto is not None
    why = ("ten labels a class have not lifted it: check that the texts carry what the labels mean, try another "
           "encoder or student, and grade the teacher on a check sample (`kdstudio check`)" if guess["cold"] else
           f"it has under {GUESS_AFTER_PER_CLASS} labels a class, where that is expected: a larger budget may lift it")
    return (f"the kept student cannot be told from a guess on {auto['n']} {auto['truth']} labels: its accuracy's 95% "
            f"{guess_evidence(guess)}; {why}")


def guess_evidence(guess: Mapping[str, Any]) -> str:
    """The evidence of a `cold_start` record, as a round line and a run's warning say it."""
    return f"interval reaches {guess['low']:.3f}, a guess gets {guess['rate']:.3f}"
