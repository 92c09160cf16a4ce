"""An audit of the teacher's labels: which are most likely wrong, with the evidence a person needs to judge."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kdstudio.doubt import judge_labels
from kdstudio.interfaces import LabelDoubt, Student
from kdstudio.store.review import Candidate

NEIGHBOURS = 3
MIN_LABELS = 10  # fewer labels than this cannot be judged out of fold


@dataclass
class Neighbour:
    doc_id: str
    label: str
    similarity: float
    source: str  # teacher or human


@dataclass
class Suspect:
    """One teacher label under audit. `belief` is the out-of-fold student's probability of the teacher's label,
    `student_label` the label it would have given instead; `suspicion` (0-1) orders the audit."""

    doc_id: str
    text: str
    label: str
    confidence: float | None
    model: str | None
    belief: float
    student_label: str
    suspicion: float
    flagged: bool
    neighbours: list[Neighbour] = field(default_factory=list)


@dataclass
class AuditReport:
    doubt: str
    student: str
    judged: int  # teacher labels judged (documents no person has labelled)
    trusted: int  # human labels the judging students also learned from
    suspects: list[Suspect]  # most suspect first

    @property
    def flagged(self) -> int:
        return sum(s.flagged for s in self.suspects)

    def to_dict(self) -> dict[str, Any]:
        return {"doubt": self.doubt, "student": self.student, "judged": self.judged, "trusted": self.trusted,
                "flagged": self.flagged, "suspects": [asdict(s) for s in self.suspects]}


def audit_labels(candidates: list[Candidate], humans: dict[str, str], vectors: Any, labels: list[str],
                 doubt: LabelDoubt, student_cls: type[Student], student_options: dict[str, Any],
                 seed: int = 0) -> tuple[list[Suspect], int]:
    """Rank teacher labels (`candidates`, documents no person has labelled) by how likely they are wrong. The judging
    students learn from every label, people's included; only the teacher's are judged. Returns the ranking and how
    many human labels took part."""
    index = {label: i for i, label in enumerate(labels)}
    human_ids = sorted(humans)
    ids = [c.doc_id for c in candidates] + human_ids
    y = np.array([index[c.label] for c in candidates] + [index[humans[d]] for d in human_ids])
    if len(ids) < MIN_LABELS:
        return [], len(human_ids)
    X = np.asarray(vectors(ids), dtype=np.float32)
    confidence = np.array([np.nan if c.confidence is None else c.confidence for c in candidates]
                          + [1.0] * len(human_ids))
    doubts, oof = judge_labels(doubt, student_cls, student_options, X, y, len(labels), confidence, seed)
    nearest = _nearest(X, len(candidates))
    sources = ["teacher"] * len(candidates) + ["human"] * len(human_ids)
    suspects = []
    for i, c in enumerate(candidates):
        suspects.append(Suspect(
            c.doc_id, c.text, c.label, c.confidence, c.model, float(oof[i, y[i]]), labels[int(oof[i].argmax())],
            float(doubts.suspicion[i]), bool(doubts.flagged[i]),
            [Neighbour(ids[j], labels[y[j]], round(float(s), 4), sources[j]) for j, s in nearest[i]]))
    suspects.sort(key=lambda s: (-s.suspicion, s.doc_id))
    return suspects, len(human_ids)


def _nearest(X: np.ndarray, n_judged: int, chunk: int = 1024) -> list[list[tuple[int, float]]]:
    """For each judged row, its most similar other labelled rows (cosine), a chunk of rows at a time."""
    norms = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)
    k = min(NEIGHBOURS, len(X) - 1)
    out: list[list[tuple[int, float]]] = []
    for start in range(0, n_judged, chunk):
        sims = norms[start:min(n_judged, start + chunk)] @ norms.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, cols in enumerate(top):
            order = cols[np.argsort(-sims[row, cols])]
            out.append([(int(j), float(sims[row, j])) for j in order])
    return out
