"""Noise-aware selection: documents the student is unsure about *and* the teacher is likely to get right.

The teacher's reliability on a document is unknown before the call, so it is predicted: a ridge regression over the
embeddings, fitted each round on the answers already bought, with as target the teacher's own confidence blended
with its agreement with the labels of its nearest answered neighbours (leave-one-out). The student's uncertainty u is
multiplied by the predicted reliability r^strength, and M-RARU's accept/reject stream runs on that product: only the
candidates it streams past are scored, by the student and by the reliability model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kdstudio.interfaces import Option, SelectionContext, TeacherAnswers
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
    the embeddings, learned from the confidences and agreement already bought)."""

    name = "noise_aware"
    options = (
        *(o for o in MRARUSelector.options if o.name != "acceptance"),
        Option("acceptance", str, "relative", "as M-RARU's, on the combined score", ("plain", "relative")),
        Option("strength", float, 2.0, "exponent of the predicted teacher reliability (0: plain M-RARU)"),
        Option("neighbours", int, 5, "answered neighbours whose agreement makes the reliability target"),
        Option("agreement_weight", float, 0.5, "share of neighbour agreement (vs teacher confidence) in the target"),
    )

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
