from __future__ import annotations

import numpy as np

from kdstudio.interfaces import Option, Selection, SelectionContext, Selector
from kdstudio_plugins.selectors.uncertainty import random_selection


class ClusterMarginSelector(Selector):
    """Uncertainty within clusters: the most uncertain documents, spread over k-means clusters of their embeddings."""

    name = "cluster-margin"
    options = (
        Option("candidates_per_pick", int, 10, "uncertain candidates considered per document picked", low=1),
        Option("measure", str, "margin", "uncertainty measure", ("margin", "entropy", "least-confidence")),
    )

    def select(self, context: SelectionContext, k: int) -> Selection:
        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        from sklearn.cluster import KMeans

        candidates, scores = context.top_uncertain(self.measure, k * self.candidates_per_pick)
        u = dict(zip(candidates.tolist(), scores.tolist(), strict=True))
        if len(candidates) <= k:
            return Selection(candidates.tolist(), scores.tolist(), context.n_pool)
        vectors = context.vectors_at(candidates)
        clusters = KMeans(n_clusters=k, n_init=1, random_state=int(context.rng.integers(2**31))).fit_predict(vectors)
        picks = []
        for cluster in range(k):
            members = candidates[clusters == cluster]
            if len(members):
                picks.append(int(members[np.argmax([u[int(m)] for m in members])]))
        # Empty clusters (rare) are filled with the next most uncertain candidates.
        for position in candidates:
            if len(picks) == k:
                break
            if int(position) not in picks:
                picks.append(int(position))
        return Selection(picks, [u[p] for p in picks], context.n_pool, {"strategy": "cluster-margin"})
