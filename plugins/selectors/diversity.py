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
        Option("candidates", int, 20000, "random pool sample searched (bounds the cost on huge pools)", low=1),
    )

    def select(self, context: SelectionContext, k: int) -> Selection:
        rng = context.rng
        sample = np.arange(context.n_pool)
        if context.n_pool > self.candidates:
            sample = np.sort(rng.choice(context.n_pool, size=self.candidates, replace=False))
        vectors = context.vectors_at(sample)
        method = kcenter_greedy if self.method == "kcenter" else kmeanspp
        picks = method(vectors, context.labelled_vectors(), k, rng)
        return Selection(sample[picks].tolist(), [float("nan")] * len(picks), 0, {"strategy": self.method})


def typicality(vectors: np.ndarray, neighbours: int) -> np.ndarray:
    """TypiClust's typicality: the inverse of the mean cosine distance to a document's nearest neighbours (dense
    regions are typical)."""
    k = min(neighbours, len(vectors) - 1)
    if k < 1:
        return np.ones(len(vectors))
    distance = np.empty(len(vectors))
    for start in range(0, len(vectors), 1024):
        d = 1.0 - vectors[start:start + 1024] @ vectors.T
        distance[start:start + 1024] = np.partition(d, k, axis=1)[:, 1:k + 1].mean(axis=1)
    return 1.0 / np.maximum(distance, 1e-6)


class TypiClustSelector(Selector):
    """Cold start by typicality in clusters (TypiClust, Hacohen et al. 2022): k-means into as many clusters as there
    are labelled documents plus the batch; from the largest clusters holding no labelled document, the most typical
    one. A first batch that covers the data's modes, which random draws miss when classes are rare."""

    name = "typiclust"
    options = (
        Option("candidates", int, 20000, "random pool sample clustered (bounds the cost on huge pools)", low=1),
        Option("neighbours", int, 20, "neighbours that define typicality", low=1),
    )

    def select(self, context: SelectionContext, k: int) -> Selection:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        rng = context.rng
        sample = np.arange(context.n_pool)
        if context.n_pool > self.candidates:
            sample = np.sort(rng.choice(context.n_pool, size=self.candidates, replace=False))
        vectors = context.vectors_at(sample)
        labelled = context.labelled_vectors()
        n_clusters = min(len(vectors), len(labelled) + k)
        seed = int(rng.integers(2**31))
        kmeans = (KMeans(n_clusters, n_init=1, random_state=seed) if len(vectors) <= 5000 else
                  MiniBatchKMeans(n_clusters, n_init=1, random_state=seed, batch_size=2048))
        assignment = kmeans.fit_predict(vectors)
        covered = set(kmeans.predict(labelled).tolist()) if len(labelled) else set()
        sizes = np.bincount(assignment, minlength=n_clusters)
        picks: list[int] = []
        scores: list[float] = []
        for cluster in np.argsort(-sizes, kind="stable"):
            if len(picks) >= k:
                break
            if cluster in covered or not sizes[cluster]:
                continue
            members = np.nonzero(assignment == cluster)[0]
            typical = typicality(vectors[members], self.neighbours)
            best = int(np.argmax(typical))
            picks.append(int(members[best]))
            scores.append(float(typical[best]))
        if len(picks) < k:  # fewer uncovered clusters than the batch: fill with random documents
            rest = np.setdiff1d(np.arange(len(vectors)), picks)
            extra = rng.choice(rest, size=min(k - len(picks), len(rest)), replace=False)
            picks.extend(int(e) for e in extra)
            scores.extend([float("nan")] * len(extra))
        return Selection(sample[picks].tolist(), scores, 0, {"strategy": "typiclust", "clusters": n_clusters})
