"""Fused labels (kdstudio.label_fusion): the teacher's belief, calibrated on trusted labels, times a student's
out-of-fold belief. Checked on synthetic data whose truth is known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kdstudio import label_fusion
from kdstudio.doubt import out_of_fold
from kdstudio.method_auto import Abilities, Recipe
from kdstudio.plugins import get_plugins

LABELS = ["a", "b", "c", "d"]
INDEX = {x: i for i, x in enumerate(LABELS)}


def answer(label: str, confidence: float | None = None, probs: dict[str, float] | None = None) -> SimpleNamespace:
    return SimpleNamespace(label=label, confidence=confidence, probs=probs)


def test_a_teachers_belief_is_its_probabilities_else_its_confidence_spread_evenly():
    given = label_fusion.teacher_belief(answer("b", 0.6, {"b": 0.6, "c": 0.3, "a": 0.1}), LABELS, INDEX)
    assert given == pytest.approx([0.1, 0.6, 0.3, 0.0])
    spread = label_fusion.teacher_belief(answer("b", 0.7), LABELS, INDEX)
    assert spread == pytest.approx([0.1, 0.7, 0.1, 0.1])
    assert label_fusion.teacher_belief(answer("d"), LABELS, INDEX) == pytest.approx([0, 0, 0, 1])


def test_an_overconfident_teacher_is_believed_as_often_as_it_is_right():
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.integers(0, 4, n)
    right = rng.random(n) < 0.6  # right 60% of the time, while claiming 0.95
    said = np.where(right, truth, (truth + rng.integers(1, 4, n)) % 4)
    beliefs = np.full((n, 4), 0.05 / 3)
    beliefs[np.arange(n), said] = 0.95
    t = label_fusion.calibration_temperature(beliefs, truth)
    assert t > 1.5
    assert label_fusion.tempered(beliefs, t).max(axis=1).mean() == pytest.approx(0.6, abs=0.05)
    # Too few trusted labels to say: its probabilities stand.
    assert label_fusion.calibration_temperature(beliefs[:9], truth[:9]) == 1.0
    # A teacher that is always right is believed fully.
    assert label_fusion.calibration_temperature(np.eye(4)[truth] * 0.9 + 0.025, truth) < 1.0


def test_fusion_keeps_a_sure_label_and_moves_a_hesitant_wrong_one_to_where_both_point():
    teacher = np.array([[0.96, 0.02, 0.01, 0.01],   # sure, and the student agrees
                        [0.50, 0.40, 0.05, 0.05],   # hesitant between a and b; the student says b
                        [0.97, 0.01, 0.01, 0.01]])  # sure, the student disagrees: the sure teacher holds
    student = np.array([[0.8, 0.1, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05], [0.05, 0.85, 0.05, 0.05]])
    fused = label_fusion.fuse(teacher, student, 1.0)
    assert fused.sum(axis=1) == pytest.approx(1.0)
    assert list(fused.argmax(axis=1)) == [0, 1, 0]
    # Calibrated flatter (a teacher less reliable than it claims), the student's view counts for more.
    assert label_fusion.fuse(teacher, student, 4.0)[2].argmax() == 1


def test_fused_labels_train_a_better_student_than_the_noisy_labels_on_data_with_known_truth():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 16))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 4, n)
        X = centres[y] + 0.9 * rng.normal(size=(n, 16))
        return X / np.linalg.norm(X, axis=1, keepdims=True), y

    X, truth = draw(240)
    X_test, y_test = draw(2000)
    wrong = rng.random(240) < 0.3
    said = np.where(wrong, (truth + rng.integers(1, 4, 240)) % 4, truth)
    beliefs = np.zeros((240, 4))
    confidence = np.where(wrong, rng.uniform(0.35, 0.7, 240), rng.uniform(0.55, 0.95, 240))
    beliefs[np.arange(240), said] = confidence
    # Half the wrong answers put the right class second, as a real teacher's second choice sometimes is.
    second = np.where(wrong & (rng.random(240) < 0.5), truth, (said + 1) % 4)
    second = np.where(second == said, (said + 2) % 4, second)
    beliefs[np.arange(240), second] += (1 - confidence) * 0.7
    beliefs += (1 - beliefs.sum(axis=1, keepdims=True)) / 4

    logreg = get_plugins().get("student", "logreg").cls
    checked = rng.choice(240, 50, replace=False)  # people's labels on 50: what the teacher is calibrated on
    t = label_fusion.calibration_temperature(beliefs[checked], truth[checked])
    fused = label_fusion.fuse(beliefs, out_of_fold(logreg, {}, X, said, 4), t)
    assert (fused.argmax(axis=1) == truth).mean() > (said == truth).mean() + 0.05

    def accuracy(soft: np.ndarray | None) -> float:
        student = logreg()
        student.fit(X, said, 4, soft_labels=soft)
        return float((student.predict_proba(X_test).argmax(axis=1) == y_test).mean())

    assert accuracy(fused) > accuracy(None) + 0.01


def test_the_search_tries_fused_labels_alone_and_with_self_training_where_it_can():
    from kdstudio import method_auto
    from kdstudio.method_auto import Judged

    tried: list[str] = []

    def fit_and_judge(recipe: Recipe) -> Judged:
        tried.append(recipe.name)
        correct = 45 if recipe.fused else 40
        return Judged(recipe, correct, 0.5, (True,) * correct + (False,) * (50 - correct))

    chosen, _ = method_auto.search(Abilities(c=False, doubt=False, self_train=True, soft=False, fused=True),
                                   fit_and_judge)
    assert tried == ["plain", "self-train", "fused labels", "self-train + fused labels"]
    assert chosen.recipe == Recipe(fused=True)
    assert Recipe.from_dict(chosen.recipe.as_dict()) == chosen.recipe
