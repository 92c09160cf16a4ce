"""A round's training: the labels it trains on, and a student fitted on them by a recipe: the run's own settings, or
(method = auto) the recipe that the run's most trusted labels prefer (kdstudio.method_auto)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kdstudio import label_fusion, method_auto
from kdstudio.doubt import doubt_weights, out_of_fold
from kdstudio.interfaces import FreeLabelTask, LabelledSet, Student
from kdstudio.method_auto import Abilities, Judged, Recipe, Referee
from kdstudio.run_state import Trained

if TYPE_CHECKING:
    from kdstudio.steps import RunContext


@dataclass
class TrainingData:
    """What every recipe of a round trains on: the documents, their labels, and the selector's weights; and what
    recipes of the round share once computed: out-of-fold probabilities by student options (doubt and fused labels
    at one regularization read the same five students) and the teacher's calibration temperature."""

    ids: list[str]
    labelled: dict[str, Any]
    synthetic: set[str]
    X: Any
    train_set: LabelledSet
    weights: np.ndarray | None
    out_of_fold: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    temperature: float | None = None

    @property
    def has_teacher_probs(self) -> bool:
        return any(self.labelled[d].probs and self.labelled[d].source == "teacher" for d in self.ids)


@dataclass(frozen=True)
class TrustedLabels:
    """People's and gold labels (method auto's referee, where it is trusted) that a round's free labeller validates its
    pseudo-labels on: their features, read once a round, and their classes."""

    X: Any
    y: np.ndarray


def training_data(ctx: RunContext, selected: list[dict[str, Any]], upto_round: int) -> TrainingData | None:
    """The run's labels for the selected documents, plus human-labelled pool ones and the samples the run generated up
    to `upto_round`; None when there is not a single label."""
    labelled = ctx.ledger.run_labels(ctx.run_id)
    chosen = {s["id"] for s in selected}
    synthetic = set(ctx.ledger.run_synthetic(ctx.run_id, upto_round))
    scores = {s["id"]: s["score"] for s in selected}
    # Sorted: the SQL returns rows in no fixed order, and the same data in another order can train a (very
    # slightly) different student, so that a resumed run would drift from an uninterrupted one.
    in_pool = ctx.in_pool(d for d in labelled if d not in synthetic)
    ids = sorted(d for d in labelled if d in synthetic or (
        d in in_pool and (d in chosen or labelled[d].source == "human")))
    if not ids:
        return None
    train_set = LabelledSet(
        y=np.array([ctx.label_index[labelled[d].label] for d in ids]),
        confidence=np.array([np.nan if labelled[d].confidence is None else labelled[d].confidence
                             for d in ids], dtype=float),
        selection_score=np.array([np.nan if scores.get(d) is None else scores[d] for d in ids], dtype=float),
        human=np.array([labelled[d].source == "human" for d in ids]),
    )
    return TrainingData(ids, labelled, synthetic, ctx.features(ids), train_set,
                        ctx.parts.selector.training_weights(train_set))


def configured(config: Any) -> Recipe:
    """The recipe a run's own settings name (method = fixed)."""
    return Recipe(doubt=config.doubt is not None, self_train=config.free_labels is not None, soft=config.soft_labels,
                  fused=config.fused_labels)


def train(ctx: RunContext, selected: list[dict[str, Any]], upto_round: int,
          earlier: list[Mapping[str, Any]] | None = None) -> Trained | None:
    """A fresh student fitted on the round's labels. `earlier` holds the run's previous rounds' metrics, from which
    method = auto knows its last choice and whether a new search is due."""
    data = training_data(ctx, selected, upto_round)
    if data is None:
        return None
    if ctx.config.method != "auto":
        return fit(ctx, data, configured(ctx.config))
    return _auto(ctx, data, [m["auto"] for m in earlier or [] if "auto" in m])


def replay(ctx: RunContext, selected: list[dict[str, Any]], upto_round: int, metrics: Mapping[str, Any]
           ) -> Trained | None:
    """The round's student again, exactly as it was trained (a resumed run's latest student)."""
    data = training_data(ctx, selected, upto_round)
    if data is None:
        return None
    recorded = metrics.get("auto")
    if not recorded:
        return fit(ctx, data, configured(ctx.config))
    referee = run_referee(ctx, data.labelled)
    trusted = TrustedLabels(ctx.features(referee.ids), referee.y) if referee and referee.trusted else None
    return fit(ctx, data, Recipe.from_dict(recorded["recipe"]), trusted)


def run_referee(ctx: RunContext, labelled: dict[str, Any]) -> Referee | None:
    teacher_val = {d: labelled[d].label for d in ctx.val_ids if d in labelled}
    return method_auto.referee(ctx.check.labels, ctx.check.by_people, ctx.gold, ctx.val_ids, teacher_val,
                               ctx.label_index)


def _auto(ctx: RunContext, data: TrainingData, previous: list[Mapping[str, Any]]) -> Trained:
    referee = run_referee(ctx, data.labelled)
    if referee is None:  # validation documents the teacher never answered, no gold, no check labels: nothing to judge
        return fit(ctx, data, configured(ctx.config))
    X_ref = ctx.features(referee.ids)
    trusted = TrustedLabels(X_ref, referee.y) if referee.trusted else None
    fitted: dict[Recipe, Trained] = {}

    def fit_and_judge(recipe: Recipe) -> Judged:
        fitted[recipe] = fit(ctx, data, recipe, trusted)
        return method_auto.judge(recipe, fitted[recipe].student.predict_proba(X_ref), referee.y)

    searched = method_auto.due(len(data.ids), previous)
    if searched:
        abilities = _abilities(ctx, data, referee)
        chosen, tried = method_auto.search(abilities, fit_and_judge, method_auto.baseline(configured(ctx.config),
                                                                                           abilities))
    else:
        chosen = fit_and_judge(method_auto.last_choice(previous))
        tried = [chosen]
    trained = fitted[chosen.recipe]
    trained.auto = method_auto.record(chosen, tried, referee, len(data.ids), searched=searched,
                                      checked=ctx.check.labels.keys(), n_classes=len(ctx.labels))
    return trained


def _abilities(ctx: RunContext, data: TrainingData, referee: Referee) -> Abilities:
    student_cls = ctx.parts.student_cls
    return Abilities(c=any(o.name == "C" for o in student_cls.options),
                     doubt=ctx.parts.doubt is not None and _doubt_can_judge(ctx, data),
                     self_train=ctx.parts.free_labeller is not None and (bool(ctx.val_ids) or referee.trusted),
                     soft=data.has_teacher_probs,
                     fused=student_cls.input == "embeddings" and _doubt_can_judge(ctx, data),
                     trusted_free=referee.trusted)


def _doubt_can_judge(ctx: RunContext, data: TrainingData) -> bool:
    # Out-of-fold students with fewer than about three labels a class judge nothing: doubt waits until there are.
    return len(data.ids) >= max(10, 3 * len(ctx.labels))


def _student_options(ctx: RunContext, recipe: Recipe) -> dict[str, Any]:
    options = dict(ctx.config.student_options)
    if recipe.c_scale != 1.0:
        default = next(o.default for o in ctx.parts.student_cls.options if o.name == "C")
        options["C"] = float(options.get("C", default)) * recipe.c_scale
    return options


def fit(ctx: RunContext, data: TrainingData, recipe: Recipe, trusted: TrustedLabels | None = None) -> Trained:
    """A student trained on the round's labels by one recipe; with method auto, `trusted` holds the labels its free
    labeller validates its pseudo-labels on."""
    options = _student_options(ctx, recipe)
    X, y, weights = data.X, data.train_set.y, data.weights
    soft = _soft_labels(ctx, data) if recipe.soft else None
    if recipe.fused and _doubt_can_judge(ctx, data):
        soft = _fused_labels(ctx, options, data)
    doubted = 0
    if recipe.doubt and ctx.parts.doubt is not None and _doubt_can_judge(ctx, data):
        trust = _trust(ctx, options, data)
        doubted = int((trust < 0.5).sum())  # held out, or counting for less than half
        weights = trust if weights is None else weights * trust
    free_note, n_labelled = "", len(y)
    if recipe.self_train and ctx.parts.free_labeller is not None:
        X, y, weights, soft, free_note = _with_free_labels(ctx, options, data, X, y, weights, soft, trusted)
    student = ctx.parts.student_cls(**options)
    student.fit(X, y, len(ctx.labels), sample_weight=weights, soft_labels=soft)
    # What the student learned from, by source and by label, kept with it for the model card.
    labelled = data.labelled
    composition = {"by_source": dict(Counter("generated" if d in data.synthetic else labelled[d].source
                                             for d in data.ids)),
                   "by_label": dict(Counter(labelled[d].label for d in data.ids))}
    return Trained(student, data.ids, labelled, doubted, free_note, len(y) - n_labelled, composition,
                   options=options)


def _with_free_labels(ctx: RunContext, options: dict[str, Any], data: TrainingData, X: np.ndarray, y: np.ndarray,
                      weights: np.ndarray | None, soft: np.ndarray | None, trusted: TrustedLabels | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str]:
    """The training set plus the free labeller's pseudo-labels on the run's pool sample (unlabelled documents only),
    and its note for the round. Their precision is validated on `trusted`, labels people or gold gave (method auto),
    else on the teacher's validation labels: where a teacher right on 80% of them errs on easy documents
    too, no threshold can show the 95% asked there, and nothing is added however sure and right the student is
    (docs/benchmarks.md, "Free labels validated on trusted labels")."""
    assert ctx.parts.free_labeller is not None
    labelled, trained_on = data.labelled, set(data.ids)
    weight = np.ones(len(y)) if weights is None else weights
    pool = ctx.index.vectors(ctx.free_ids)
    pool_y = np.array([ctx.label_index[labelled[d].label] if d in trained_on else -1 for d in ctx.free_ids],
                      dtype=np.int64)

    def fit_one(X_: np.ndarray, y_: np.ndarray, w_: np.ndarray) -> Student:
        student = ctx.parts.student_cls(**options)
        student.fit(X_, y_, len(ctx.labels), sample_weight=w_)
        return student

    if trusted is not None:
        val_X, val_y = trusted.X, trusted.y
    else:
        val = [d for d in ctx.val_ids if d in labelled]
        val_X, val_y = ctx.features(val), np.array([ctx.label_index[labelled[d].label] for d in val], dtype=np.int64)
    task = FreeLabelTask(X, y, weight, len(ctx.labels), pool, pool_y, val_X, val_y, fit_one)
    free = ctx.parts.free_labeller.pseudo_labels(task)
    if not len(free.rows):
        return X, y, weights, soft, free.note
    X = np.vstack([X, pool[free.rows]])
    if soft is not None:
        soft = np.vstack([soft, np.eye(len(ctx.labels))[free.y]])
    return X, np.concatenate([y, free.y]), np.concatenate([weight, free.weight]), soft, free.note


def _out_of_fold(ctx: RunContext, options: dict[str, Any], data: TrainingData) -> np.ndarray:
    """The round's out-of-fold probabilities for students with these options, fitted once a round; a copy, so that
    no plugin's use of them reaches another recipe's."""
    key = json.dumps(options, sort_keys=True, default=repr)
    if key not in data.out_of_fold:
        data.out_of_fold[key] = out_of_fold(ctx.parts.student_cls, options, data.X, data.train_set.y,
                                            len(ctx.labels), seed=ctx.config.seed)
    return data.out_of_fold[key].copy()


def _trust(ctx: RunContext, options: dict[str, Any], data: TrainingData) -> np.ndarray:
    """How much each label is believed: the doubt plugin's out-of-fold judgement made into weights."""
    assert ctx.parts.doubt is not None
    train_set = data.train_set
    doubts = ctx.parts.doubt.judge(train_set.y, _out_of_fold(ctx, options, data), train_set.confidence)
    return doubt_weights(doubts, train_set.y, train_set.human, ctx.parts.doubt.action, data.weights)


def _fused_labels(ctx: RunContext, options: dict[str, Any], data: TrainingData) -> np.ndarray:
    """Each teacher label fused with a student's out-of-fold belief (kdstudio.label_fusion); people's labels and
    anything else stay one-hot."""
    soft = np.eye(len(ctx.labels))[data.train_set.y]
    rows = [i for i, d in enumerate(data.ids) if data.labelled[d].source == "teacher"]
    if not rows:
        return soft
    oof = _out_of_fold(ctx, options, data)
    beliefs = np.array([label_fusion.teacher_belief(data.labelled[data.ids[i]], ctx.labels, ctx.label_index)
                        for i in rows])
    soft[rows] = label_fusion.fuse(beliefs, oof[rows], _teacher_temperature(ctx, data))
    return soft


def _teacher_temperature(ctx: RunContext, data: TrainingData) -> float:
    """The temperature that calibrates the teacher on the labels the run trusts (people's checked labels, gold on the
    validation documents); 1 where there are none. Measured once a round."""
    if data.temperature is None:
        data.temperature = _calibrated_temperature(ctx, data)
    return data.temperature


def _calibrated_temperature(ctx: RunContext, data: TrainingData) -> float:
    referee = run_referee(ctx, data.labelled)
    if referee is None or not referee.trusted:
        return 1.0
    answers = ctx.ledger.run_teacher_answers(ctx.run_id, referee.ids)
    pairs = [(answers[d], y) for d, y in zip(referee.ids, referee.y, strict=True) if d in answers]
    if not pairs:
        return 1.0
    beliefs = np.array([label_fusion.teacher_belief(a, ctx.labels, ctx.label_index) for a, _ in pairs])
    return label_fusion.calibration_temperature(beliefs, np.array([y for _, y in pairs]))


def _soft_labels(ctx: RunContext, data: TrainingData) -> np.ndarray:
    """The teacher's probabilities where it gave them; one-hot for people and for answers without them."""
    soft = np.eye(len(ctx.labels))[data.train_set.y]
    for i, d in enumerate(data.ids):
        probs = data.labelled[d].probs
        if probs and data.labelled[d].source == "teacher":
            row = np.array([probs.get(label, 0.0) for label in ctx.labels])
            if row.sum() > 0:
                soft[i] = row / row.sum()
    return soft
