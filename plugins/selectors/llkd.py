"""LLKD, as reconstructed in docs/methods.md: select documents the student is uncertain about, relative to
per-class adaptive thresholds, and train on the labels the teacher is confident about, weighted by both."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdstudio.interfaces import LabelledSet, Option, Selection, SelectionContext, Selector
from kdstudio.uncertainty import MEASURES, uncertainty
from kdstudio_plugins.selectors.uncertainty import random_selection


def update_thresholds(taus: dict[int, float], classes: np.ndarray, values: np.ndarray, momentum: float) -> None:
    """Per-class thresholds as exponential moving averages of each class's mean value."""
    for c in np.unique(classes):
        mean = float(values[classes == c].mean())
        c = int(c)
        taus[c] = mean if c not in taus else momentum * taus[c] + (1 - momentum) * mean


def confident_weights(labelled: LabelledSet, taus: dict[int, float], momentum: float) -> np.ndarray:
    """LLKD's training side: a label counts when the teacher was at least as confident as is usual for its class
    (`taus`, updated here), weighted by the teacher's confidence times the student's uncertainty at selection."""
    y, c = labelled.y, labelled.confidence.copy()
    c[labelled.human] = 1.0
    c = np.nan_to_num(c, nan=1.0)
    # Seed documents were picked at random, not for uncertainty: they count fully.
    s = np.nan_to_num(labelled.selection_score, nan=1.0)
    update_thresholds(taus, y, c, momentum)
    threshold = np.array([taus[int(label)] for label in y])
    keep = (c >= threshold - 1e-9) | labelled.human
    for label in np.unique(y):
        members = y == label
        if not keep[members].any():
            keep[members] = True  # never let a class vanish from training
    weight = np.where(keep, c * np.maximum(s, 1e-3), 0.0)
    return weight * keep.sum() / weight.sum()


class LLKDSelector(Selector):
    """LLKD: student-uncertain selection and teacher-confident, weighted training with per-class adaptive
    thresholds (moving averages)."""

    name = "llkd"
    options = (
        Option("measure", str, "entropy", "student uncertainty s", MEASURES),
        Option("momentum", float, 0.9, "moving-average momentum of the per-class thresholds", low=0.0, high=1.0),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.tau_student: dict[int, float] = {}
        self.tau_teacher: dict[int, float] = {}

    def select(self, context: SelectionContext, k: int) -> Selection:
        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        probs = context.score(np.arange(context.n_pool))
        s = uncertainty(probs, self.measure)
        predicted = probs.argmax(axis=1)
        update_thresholds(self.tau_student, predicted, s, self.momentum)
        threshold = np.array([self.tau_student.get(int(c), 0.0) for c in predicted])
        eligible = np.flatnonzero(s >= threshold)
        # Round-robin over predicted classes, most uncertain first, so that no class is starved.
        queues = {int(c): list(eligible[predicted[eligible] == c][np.argsort(-s[eligible[predicted[eligible] == c]])])
                  for c in np.unique(predicted[eligible])}
        picks: list[int] = []
        while len(picks) < k and any(queues.values()):
            for c in sorted(queues, key=lambda c: -s[queues[c][0]] if queues[c] else 0):
                if queues[c] and len(picks) < k:
                    picks.append(int(queues[c].pop(0)))
        if len(picks) < k:
            taken = set(picks)
            picks += [int(i) for i in np.argsort(-s) if int(i) not in taken][: k - len(picks)]
        return Selection(picks, s[picks].tolist(), context.n_pool,
                         {"strategy": "llkd", "eligible": len(eligible)})

    def training_weights(self, labelled: LabelledSet) -> np.ndarray:
        return confident_weights(labelled, self.tau_teacher, self.momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"tau_student": {str(k): v for k, v in self.tau_student.items()},
                "tau_teacher": {str(k): v for k, v in self.tau_teacher.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau_student = {int(k): v for k, v in state.get("tau_student", {}).items()}
        self.tau_teacher = {int(k): v for k, v in state.get("tau_teacher", {}).items()}
