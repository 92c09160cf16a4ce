"""Noise-aware selection: documents the student is unsure about *and* the teacher is likely to get right.

The teacher's reliability on a document is unknown before the call, so it is predicted: a ridge regression over the
embeddings, fitted each round on the answers already bought, with as target the teacher's own confidence blended
with its agreement with the labels of its nearest answered neighbours (leave-one-out). The student's uncertainty u is
multiplied by the predicted reliability r^strength, and M-RARU's accept/reject stream runs on that product: only the
candidates it streams past are scored, by the student and by the reliability model. Training keeps LLKD's side: per
class, labels the teacher was less sure of than usual are held out, the rest weighted by confidence x uncertainty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kdstudio.interfaces import LabelledSet, Option, SelectionContext, TeacherAnswers
from kdstudio_plugins.selectors.llkd import confident_weights
from kdstudio_plugins.selectors.mraru import MRARUSelector

MIN_ANSWERS = 10  # below this there is nothing to learn the teacher's reliability from


def neighbour_agreement(answers: TeacherAnswers, k: int) -> np.ndarray:
    """For each answer, the share of its k nearest other answers (cosine) that gave the same class."""
    n = len(answers.y)
    k = min(k, n - 1)
    sims = answers.vectors @ answers.vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return (answers.y[nearest] == answers.y[:, None]).mean(axis=1)


def reliability_target(answers: TeacherAnswers, k: int, agreement_weight: float) -> np.ndarray:
    """What the reliability model learns: the teacher's confidence (1 where it gave none) blended with its
    neighbours' agreement."""
    confidence = np.nan_to_num(answers.confidence, nan=1.0)
    return (1 - agreement_weight) * confidence + agreement_weight * neighbour_agreement(answers, k)


class NoiseAwareSelector(MRARUSelector):
    """Noise-aware M-RARU: the student's uncertainty times the teacher's predicted reliability (a ridge model over
    the embeddings, learned from the confidences and agreement already bought); LLKD's confident training."""

    name = "noise_aware"
    options = (
        *(o for o in MRARUSelector.options if o.name != "acceptance"),
        Option("acceptance", str, "relative", "as M-RARU's, on the combined score", ("plain", "relative")),
        Option("strength", float, 2.0, "exponent of the predicted teacher reliability (0: plain M-RARU)", low=0.0),
        Option("neighbours", int, 5, "answered neighbours whose agreement makes the reliability target", low=1),
        Option("agreement_weight", float, 0.5, "share of neighbour agreement (vs teacher confidence) in the target",
               low=0.0, high=1.0),
        Option("weighting", str, "confident", "training weights: confident (LLKD's per-class teacher-confidence "
                                              "thresholds and confidence x uncertainty weights) or none",
               ("confident", "none")),
        Option("momentum", float, 0.9, "moving-average momentum of the per-class confidence thresholds",
               low=0.0, high=1.0),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.tau_teacher: dict[int, float] = {}

    def weigher(self, context: SelectionContext) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        answers = context.teacher_answers()
        if self.strength == 0 or len(answers.y) < MIN_ANSWERS:
            return super().weigher(context)
        from sklearn.linear_model import Ridge

        target = reliability_target(answers, self.neighbours, self.agreement_weight)
        model = Ridge(alpha=1.0).fit(answers.vectors, target)

        def weigh(positions: np.ndarray, u: np.ndarray) -> np.ndarray:
            reliability = np.clip(model.predict(context.vectors_at(positions)), 1e-3, 1.0)
            return u * reliability ** self.strength

        return weigh

    def training_weights(self, labelled: LabelledSet) -> np.ndarray | None:
        if self.weighting == "none":
            return None
        return confident_weights(labelled, self.tau_teacher, self.momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"tau_teacher": {str(k): v for k, v in self.tau_teacher.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau_teacher = {int(k): v for k, v in state.get("tau_teacher", {}).items()}
