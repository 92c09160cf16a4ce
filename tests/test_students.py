from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdstudio.plugins import Plugins

PLUGINS = Plugins.load()
HEADS = ["logreg", "svm", "lda", "rf", "gbdt"]


def long_tail(n_classes: int = 60, seed: int = 0):
    """Separable clusters whose sizes follow a long tail: many classes with one or two examples, some with none."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 32))
    sizes = np.maximum(0, (40 / (1 + np.arange(n_classes)) ** 1.1).astype(int))
    sizes[[7, 8]] = [1, 2]
    y = np.repeat(np.arange(n_classes), sizes)
    X = centres[y] + 0.3 * rng.normal(size=(len(y), 32))
    return X.astype(np.float32), y, centres, sizes


@pytest.mark.parametrize("name", HEADS)
def test_heads_survive_a_long_tail_of_classes(name: str):
    X, y, centres, sizes = long_tail()
    student = PLUGINS.get("student", name).cls()
    student.fit(X, y, 60)
    probs = student.predict_proba(X)
    assert probs.shape == (len(X), 60)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    unseen = np.flatnonzero(sizes == 0)
    assert len(unseen) > 10 and np.all(probs[:, unseen] == 0)
    assert (probs.argmax(axis=1) == y).mean() > 0.8
    one_example = centres[7][None, :].astype(np.float32)
    assert student.predict_proba(one_example).shape == (1, 60)


@pytest.mark.parametrize("name", HEADS)
def test_heads_take_sample_weights_and_soft_labels(name: str, tmp_path: Path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-1, 0.5, size=(30, 8)), rng.normal(1, 0.5, size=(30, 8))]).astype(np.float32)
    y = np.repeat([0, 1], 30)
    student = PLUGINS.get("student", name).cls()
    weights = np.where(y == 1, 0.0, 1.0)
    weights[30] = 1.0  # class 1 keeps one example
    student.fit(X, y, 3, sample_weight=weights)
    assert student.predict_proba(X).shape == (60, 3)
    soft = np.zeros((60, 3))
    soft[np.arange(60), y] = 0.8
    soft[:, 2] = 0.2
    student.fit(X, y, 3, soft_labels=soft)
    probs = student.predict_proba(X)
    assert probs[:, 2].mean() > 0.0  # the soft mass taught it that class 2 exists
    assert (probs.argmax(axis=1) == y).mean() > 0.9
    student.save(tmp_path / name)
    loaded = type(student).load(tmp_path / name)
    np.testing.assert_allclose(loaded.predict_proba(X), probs)


@pytest.mark.parametrize("name", HEADS)
def test_a_single_labelled_class_gives_a_constant_student(name: str):
    student = PLUGINS.get("student", name).cls()
    student.fit(np.ones((3, 4), dtype=np.float32), np.array([2, 2, 2]), 4)
    assert student.predict_proba(np.zeros((2, 4))).tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]


@pytest.mark.slow
def test_finetuned_minilm_learns_saves_and_loads(tmp_path: Path):
    texts = ["the striker scored a late goal", "the keeper saved a penalty", "a hat-trick won the match",
             "parliament passed the budget bill", "the minister resigned today", "voters went to the polls"] * 3
    y = np.array([0, 0, 0, 1, 1, 1] * 3)
    student = PLUGINS.get("student", "finetune").cls(epochs=4, max_length=32, batch_size=8, learning_rate=2e-4)
    student.fit(texts, y, 2)
    probs = student.predict_proba(texts)
    assert probs.shape == (18, 2)
    assert (probs.argmax(axis=1) == y).mean() >= 0.9
    student.save(tmp_path / "ft")
    loaded = type(student).load(tmp_path / "ft")
    np.testing.assert_allclose(loaded.predict_proba(texts), probs, atol=1e-5)
