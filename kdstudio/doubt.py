"""Training that doubts its labels: each teacher label is judged by a student that never saw it (out-of-fold
probabilities), a label-doubt plugin says which look wrong, and those are down-weighted or held out."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdstudio.interfaces import Doubts, LabelDoubt, Student

# A weighted label never counts for less than this: a wrongly doubted rare-class example still teaches a little.
MIN_WEIGHT = 0.05


def out_of_fold(student_cls: type[Student], options: dict[str, Any], X: np.ndarray, y: np.ndarray, n_classes: int,
                folds: int = 5, seed: int = 0) -> np.ndarray:
    """(n, n_classes) probabilities, each row from a student fitted on the other folds. Folds are stratified where
    every class has enough members; a class with a single member is judged by students that never saw the class,
    which is exactly the doubt it deserves."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    folds = max(2, min(folds, n))
    counts = np.bincount(y, minlength=n_classes)
    stratify = counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if stratify
                else KFold(folds, shuffle=True, random_state=seed))
    oof = np.zeros((n, n_classes))
    for train, held in splitter.split(X, y if stratify else None):
        student = student_cls(**options)
        student.fit(X[train], y[train], n_classes)
        oof[held] = student.predict_proba(X[held])
    return oof


def judge_labels(doubt: LabelDoubt, student_cls: type[Student], options: dict[str, Any], X: np.ndarray,
                 y: np.ndarray, n_classes: int, confidence: np.ndarray, seed: int = 0) -> tuple[Doubts, np.ndarray]:
    """The doubt plugin's judgement of every label, with the out-of-fold probabilities it was made from."""
    oof = out_of_fold(student_cls, options, X, y, n_classes, seed=seed)
    return doubt.judge(y, oof, confidence), oof


def doubt_weights(doubts: Doubts, y: np.ndarray, human: np.ndarray, action: str,
                  before: np.ndarray | None = None) -> np.ndarray:
    """Training weights from a judgement: `drop` holds flagged labels out, `weight` scales each by 1 - suspicion.
    People are never doubted, and no class is ever emptied by doubt alone. Where the labels doubt leaves are all ones
    that `before` (the selector's own training weights, noise_aware's) holds out, doubt holds out nothing: it would
    leave nothing to learn from. (A class the two empty together stays empty, as it always has: keeping its doubted
    labels instead changed 17 of 38 of noise_aware + doubt's matrix runs, by -4.4 to +3.8 points, 2.8 points down on
    bbc-news with the zero-shot teacher, where that setup is the best; docs/benchmarks.md.)"""
    dropped = np.where(doubts.flagged, 0.0, 1.0)
    weight = dropped if action == "drop" else np.maximum(1.0 - doubts.suspicion, MIN_WEIGHT)
    weight[human] = 1.0
    for label in np.unique(y):
        members = y == label
        if not weight[members].any():
            weight[members] = 1.0
    if before is not None and not (weight * before).any():
        return np.ones(len(y))
    return weight
