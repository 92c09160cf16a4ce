from __future__ import annotations

import numpy as np

from kdstudio.interfaces import Option, Selection, SelectionContext, Selector


def kcenter_greedy(candidates: np.ndarray, anchors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Farthest-first traversal in cosine distance (vectors are L2-normalized): each pick is the candidate
    farthest from everything labelled or already picked."""
    if len(anchors):
        nearest = np.full(len(candidates), np.inf)
        for start in range(0, len(anchors), 1024):
            block = anchors[start:start + 1024]
            nearest = np.minimum(nearest, 1.0 - (candidates @ block.T).max(axis=1))
        first = int(np.argmax(nearest))
    else:
        first = int(rng.integers(len(candidates)))
        nearest = np.full(len(candidates), np.inf)
    picks = [first]
    nearest = np.minimum(nearest, 1.0 - candidates @ candidates[first])
    while len(picks) < min(k, len(candidates)):
        nearest[picks] = -np.inf
        nxt = int(np.argmax(nearest))
        picks.append(nxt)
        nearest = np.minimum(nearest, 1.0 - candidates @ candidates[nxt])
    return np.array(picks)


def kmeanspp(candidates: np.ndarray, anchors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each pick drawn with probability proportional to squared distance to the nearest
    labelled or picked document."""
    nearest = np.full(len(candidates), 2.0)
    for start in range(0, len(anchors), 1024):
        nearest = np.minimum(nearest, 1.0 - (candidates @ anchors[start:start + 1024].T).max(axis=1))
    picks: list[int] = []
    for _ in range(min(k, len(candidates))):
        weight = np.clip(nearest, 0, None) ** 2
        weight[picks] = 0
        total = weight.sum()
        pick = int(rng.choice(len(candidates), p=weight / total)) if total > 0 else int(
            rng.choice(np.setdiff1d(np.arange(len(candidates)), picks)))
        picks.append(pick)
        nearest = np.minimum(nearest, 1.0 - candidates @ candidates[pick])
    return np.array(picks)


class DiversitySelector(Selector):
    """Covers the embedding space: k-center greedy or k-means++ seeding, away from what is labelled."""

    name = "diversity"
    options = (
        Option("method", str, "kcenter", "farthest-first (kcenter) or D^2 sampling (kmeans++)",
               ("kcenter", "kmeans++")),
        Option("candidates", int, 20000, "random pool sample searched (bounds the cost on huge pools)"),
    )

    def select(self, context: SelectionContext, k: int) -> Selection:
        rng = context.rng
        sample = np.arange(context.n_pool)
        if context.n_pool > self.candidates:
            sample = np.sort(rng.choice(context.n_pool, size=self.candidates, replace=False))
        vectors = context.pool_vectors()[sample]
        method = kcenter_greedy if self.method == "kcenter" else kmeanspp
        picks = method(vectors, context.labelled_vectors(), k, rng)
        return Selection(sample[picks].tolist(), [float("nan")] * len(picks), 0, {"strategy": self.method})
