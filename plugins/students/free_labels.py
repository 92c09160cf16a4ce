"""Free labels from the unlabelled pool: self-training and label spreading. Both propose pseudo-labels that the
run's own student (any embeddings head) trains on beside the teacher's labels, down-weighted, for one round only.

Both choose how sure a pseudo-label must be on the validation set: the lowest confidence above which the
pseudo-labeller agrees with the validation labels at least `precision` of the time (over at least MIN_SUPPORT
documents), and, for each class it predicts, the same on the validation documents it predicts as that class (at least
`class_support` of them), wherever the validation set holds `class_support` documents a class. Where no confidence
reaches it, the round adds nothing, and a class not validated on its own documents gains nothing. Each class may gain
at most `ratio` pseudo-labels per label it has, so that an easy class cannot swamp the others.

The per-class check exists because of that cap: validated together, the precision is the commonest classes', while
the cap gives the rarer ones most of the pseudo-labels (on Reuters R8 with a teacher that swaps neighbouring classes,
pseudo-labels validated at 95% were right on 0.74-0.96 of them a round, and on 0.31-0.79 in four classes of eight;
docs/benchmarks.md). With fewer validation documents than that (50 on 20 classes) no class could be checked on its
own, and demanding it would end self-training where it helps; there the classes are validated together only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdstudio.interfaces import FreeLabeller, FreeLabels, FreeLabelTask, Option

MIN_SUPPORT = 10


def validated_threshold(confidence: np.ndarray, correct: np.ndarray, precision: float,
                        support: int = MIN_SUPPORT) -> float | None:
    """The lowest confidence at which everything at least as confident is right `precision` of the time, over at
    least `support` validation documents; None when no confidence gets there."""
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    taken = np.arange(1, len(order) + 1)
    good = np.nonzero((hits / taken >= precision) & (taken >= support))[0]
    return float(confidence[order[good[-1]]]) if len(good) else None


def class_thresholds(confidence: np.ndarray, predicted: np.ndarray, correct: np.ndarray, n_classes: int,
                     precision: float, support: int) -> np.ndarray:
    """Each predicted class's own validated threshold, on the validation documents predicted as that class (inf
    where none is validated)."""
    found = [validated_threshold(confidence[predicted == c], correct[predicted == c], precision, support)
             for c in range(n_classes)]
    return np.array([np.inf if t is None else t for t in found])


def capped(rows: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, class_counts: np.ndarray,
           ratio: float) -> np.ndarray:
    """The most confident rows of each class, at most `ratio` per label the class already has."""
    keep: list[np.ndarray] = []
    for c in np.unique(predicted):
        mine = rows[predicted == c]
        room = int(ratio * class_counts[c])
        keep.append(mine[np.argsort(-confidence[mine], kind="stable")[:room]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


class _Thresholded(FreeLabeller):
    """Shared: the validated threshold, the per-class cap and the weights, given class probabilities for the
    unlabelled pool rows and the validation documents."""

    def _choose(self, task: FreeLabelTask, method: str, pool_probs: np.ndarray, val_probs: np.ndarray) -> FreeLabels:
        unlabelled = np.nonzero(task.pool_y < 0)[0]
        if not len(task.val_y):
            return FreeLabels.none(f"{method}: no validation labels to choose a threshold on")
        val_conf, val_predicted = val_probs.max(axis=1), val_probs.argmax(axis=1)
        val_right = val_predicted == task.val_y
        threshold = validated_threshold(val_conf, val_right, self.precision)
        if threshold is None:
            return FreeLabels.none(f"{method}: no confidence reaches {self.precision:.0%} on validation")
        conf, predicted = pool_probs.max(axis=1), pool_probs.argmax(axis=1)
        floor, validated = np.full(task.n_classes, threshold), ""
        if self.class_support and len(task.val_y) >= self.class_support * task.n_classes:
            per_class = class_thresholds(val_conf, val_predicted, val_right, task.n_classes, self.precision,
                                         self.class_support)
            floor = np.maximum(per_class, threshold)
            validated = f", {int(np.isfinite(per_class).sum())} of {task.n_classes} classes validated on their own"
        sure = np.nonzero(conf >= floor[predicted])[0]
        counts = np.bincount(task.y, minlength=task.n_classes)
        chosen = capped(sure, predicted[sure], conf, counts, self.ratio)
        mean_weight = float(task.weight.mean()) if len(task.weight) else 1.0
        return FreeLabels(unlabelled[chosen], predicted[chosen], np.full(len(chosen), self.weight * mean_weight),
                          f"{method} +{len(chosen)} at confidence >= {threshold:.2f}{validated}")


COMMON = (
    Option("precision", float, 0.95, "how often pseudo-labels must agree with the validation labels",
           low=0.0, high=1.0),
    Option("ratio", float, 5.0, "pseudo-labels a class may gain per label it has", low=0.0),
    Option("weight", float, 0.5, "a pseudo-label's training weight, relative to a teacher label", low=0.0, high=10.0),
    Option("class_support", int, 5, "validate each predicted class on at least this many of its own validation "
                                    "documents too, where there are this many a class (0: never)", low=0),
    FreeLabeller.POOL_SAMPLE,
)


class SelfTraining(_Thresholded):
    """Self-training: the student's own confident predictions on the pool, as down-weighted pseudo-labels."""

    name = "self-train"
    options = COMMON

    def pseudo_labels(self, task: FreeLabelTask) -> FreeLabels:
        base = task.fit(task.X, task.y, task.weight)
        unlabelled = task.pool[task.pool_y < 0]
        if not len(unlabelled):
            return FreeLabels.none("self-training: no unlabelled document left")
        return self._choose(task, "self-training", base.predict_proba(unlabelled), base.predict_proba(task.val_X))


class LabelSpreading(_Thresholded):
    """Label spreading (Zhou et al. 2004) over a k-nearest-neighbour graph of the pool and validation embeddings:
    labels flow to neighbours; the confident ones become pseudo-labels."""

    name = "spread"
    options = (
        Option("neighbours", int, 10, "neighbours per document in the graph", low=1),
        Option("alpha", float, 0.9, "how much a document takes from its neighbours rather than its own label",
               low=0.0, high=1.0),
        Option("iterations", int, 30, "spreading steps", low=1),
        *COMMON,
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._graph: tuple[tuple[int, ...], Any] | None = None

    def _normalized_graph(self, nodes: np.ndarray) -> Any:  # a scipy sparse matrix
        """S = D^-1/2 W D^-1/2 over a symmetric kNN graph weighted by cosine similarity; built once per run (the
        pool sample and the validation set do not change between rounds)."""
        import scipy.sparse as sp
        from sklearn.neighbors import NearestNeighbors

        key = (*nodes.shape, hash(nodes[:: max(1, len(nodes) // 64)].tobytes()))
        if self._graph is not None and self._graph[0] == key:
            return self._graph[1]
        k = min(self.neighbours, len(nodes) - 1)
        distance, index = NearestNeighbors(n_neighbors=k + 1).fit(nodes).kneighbors(nodes)
        # Unit vectors: cosine similarity = 1 - d^2 / 2. The first neighbour is the document itself.
        similarity = np.clip(1.0 - distance[:, 1:] ** 2 / 2.0, 0.0, None).ravel()
        rows = np.repeat(np.arange(len(nodes)), k)
        weights = sp.csr_matrix((similarity, (rows, index[:, 1:].ravel())), shape=(len(nodes),) * 2)
        weights = weights.maximum(weights.T)
        degree = np.asarray(weights.sum(axis=1)).ravel()
        scale = sp.diags(1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)))
        graph = (scale @ weights @ scale).tocsr()
        self._graph = (key, graph)
        return graph

    def pseudo_labels(self, task: FreeLabelTask) -> FreeLabels:
        if not (task.pool_y < 0).any():
            return FreeLabels.none("label spreading: no unlabelled document left")
        nodes = np.vstack([task.pool, task.val_X]).astype(np.float32)
        nodes /= np.maximum(np.linalg.norm(nodes, axis=1, keepdims=True), 1e-12)
        graph = self._normalized_graph(nodes)
        seeds = np.zeros((len(nodes), task.n_classes))
        known = np.nonzero(task.pool_y >= 0)[0]
        seeds[known, task.pool_y[known]] = 1.0
        spread = seeds.copy()
        for _ in range(self.iterations):
            spread = self.alpha * (graph @ spread) + (1.0 - self.alpha) * seeds
        mass = spread.sum(axis=1, keepdims=True)
        probs = np.divide(spread, mass, out=np.full_like(spread, 1.0 / task.n_classes), where=mass > 0)
        pool_probs = probs[: len(task.pool)][task.pool_y < 0]
        return self._choose(task, "label spreading", pool_probs, probs[len(task.pool):])
