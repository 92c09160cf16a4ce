"""Label doubts. `cleanlab` finds labels the out-of-fold student disbelieves beyond what the classes' estimated noise
rates explain (confident learning); `confidence` trusts the teacher's own confidence alone, for comparison."""

from __future__ import annotations

import warnings

import numpy as np

from kdstudio.interfaces import Doubts, LabelDoubt, Option

RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


class CleanlabDoubt(LabelDoubt):
    """cleanlab's confident learning on out-of-fold student probabilities; suspicion blends in the teacher's own
    confidence."""

    name = "cleanlab"
    options = (
        LabelDoubt.ACTION,
        Option("ranking", str, "self_confidence", "cleanlab's label-quality score", RANKINGS),
        Option("filter_by", str, "prune_by_noise_rate", "cleanlab's rule for which labels are issues",
               ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")),
        # 0.5: on simulated difficulty noise it ranked errors best of 0, 0.3, 0.5 and 0.7 (docs/benchmarks.md).
        Option("teacher_weight", float, 0.5, "share of the teacher's own doubt (1 - confidence) in the suspicion",
               low=0.0, high=1.0),
    )

    def judge(self, y: np.ndarray, oof_probs: np.ndarray, confidence: np.ndarray) -> Doubts:
        # Imported here: cleanlab pulls pandas, which `kdstudio --help` should never pay for.
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        probs = _renormalized(oof_probs)
        quality = get_label_quality_scores(y, probs, method=self.ranking)
        teacher_doubt = np.nan_to_num(1.0 - confidence, nan=0.0)
        suspicion = (1 - self.teacher_weight) * (1.0 - quality) + self.teacher_weight * teacher_doubt
        # cleanlab needs every class it judges to hold at least one label; classes never seen in y are dropped.
        present = np.unique(y)
        remap = np.full(probs.shape[1], -1)
        remap[present] = np.arange(len(present))
        with warnings.catch_warnings():
            # "May not flag all label issues in class k": expected with a few labels per class, said per round.
            warnings.simplefilter("ignore", UserWarning)
            flagged = find_label_issues(remap[y], _renormalized(probs[:, present]), filter_by=self.filter_by)
        return Doubts(np.clip(suspicion, 0.0, 1.0), np.asarray(flagged, dtype=bool))


class ConfidenceDoubt(LabelDoubt):
    """The teacher's own confidence alone: labels below a confidence are flagged (no student involved)."""

    name = "confidence"
    options = (LabelDoubt.ACTION, Option("below", float, 0.6, "teacher confidence under which a label is flagged",
                                         low=0.0, high=1.0))

    def judge(self, y: np.ndarray, oof_probs: np.ndarray, confidence: np.ndarray) -> Doubts:
        doubt = np.nan_to_num(1.0 - confidence, nan=0.0)
        return Doubts(np.clip(doubt, 0.0, 1.0), np.nan_to_num(confidence, nan=1.0) < self.below)


def _renormalized(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(np.asarray(probs, dtype=float), 1e-9, None)
    return probs / probs.sum(axis=1, keepdims=True)
