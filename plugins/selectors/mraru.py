"""M-RARU, as reconstructed in docs/methods.md: a random stream of candidates, each accepted with a probability
driven by the student's normalized uncertainty, until the batch is full. Only the candidates it meets are scored,
so a selection costs O(batch / acceptance rate), not O(pool). On an engine the chunks are scored on its workers,
a few ahead of the decisions, until the batch is full."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kdstudio.interfaces import Option, Selection, SelectionContext, Selector
from kdstudio.uncertainty import MEASURES, uncertainty
from kdstudio_plugins.selectors.uncertainty import random_selection


def candidate_stream(n: int, chunk: int, rng: np.random.Generator):
    """Pool positions in random order, `chunk` at a time, without permuting the whole pool: on a huge pool the
    cost follows the candidates drawn, not the pool size."""
    if n <= 65536:
        order = rng.permutation(n)
        for start in range(0, n, chunk):
            yield order[start:start + chunk]
        return
    seen: set[int] = set()
    while len(seen) < n // 2:
        draw = [int(p) for p in np.unique(rng.integers(0, n, size=chunk)) if int(p) not in seen]
        seen.update(draw)
        if draw:
            yield np.array(rng.permutation(draw))
    # Past half the pool, rejection sampling wastes draws: stream what is left in a random order.
    rest = np.setdiff1d(np.arange(n), np.fromiter(seen, dtype=np.int64))
    rest = rng.permutation(rest)
    for start in range(0, len(rest), chunk):
        yield rest[start:start + chunk]


def empirical_cdf(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of `reference` at or below each value."""
    ordered = np.sort(reference)
    return np.searchsorted(ordered, values, side="right") / max(len(ordered), 1)


class MRARUSelector(Selector):
    """M-RARU: randomized accept/reject on uncertainty; scores only the candidates it streams past."""

    name = "mraru"
    options = (
        Option("measure", str, "margin", "normalized uncertainty u", MEASURES),
        Option("acceptance", str, "plain", "plain: accept with u^(1/T); relative: with F(u)^sharpness, F the "
                                            "running CDF of u among candidates scored this round",
               ("plain", "relative")),
        Option("temperature", float, 1.0, "T of plain acceptance (below 1 sharpens towards uncertain documents)",
               low=1e-6),
        Option("sharpness", float, 3.0, "exponent of relative acceptance (about batch*(1+sharpness) scored)", low=0.0),
        Option("chunk", int, 32, "candidates scored together (one student call)", low=1),
    )

    def select(self, context: SelectionContext, k: int) -> Selection:
        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        # Candidates and accept/reject draws come from separate streams, so that an engine scoring chunks ahead of
        # the decisions (Ray) makes exactly the choices the in-process scorer does.
        stream_rng, accept_rng = context.rng.spawn(2)
        accepted: list[int] = []
        accepted_u: list[float] = []
        seen_pos: list[np.ndarray] = []
        seen_u: list[np.ndarray] = []
        scored = 0
        weigh = self.weigher(context)
        chunks = context.score_stream(candidate_stream(context.n_pool, self.chunk, stream_rng))
        for candidates, probs in chunks:
            u = weigh(candidates, uncertainty(probs, self.measure))
            scored += len(candidates)
            seen_pos.append(candidates)
            seen_u.append(u)
            if self.acceptance == "plain":
                p = u ** (1.0 / self.temperature)
            else:
                p = empirical_cdf(np.concatenate(seen_u), u) ** self.sharpness
            for position, value, prob, draw in zip(candidates, u, p, accept_rng.random(len(candidates)),
                                                   strict=True):
                if draw < prob:
                    accepted.append(int(position))
                    accepted_u.append(float(value))
                    if len(accepted) == k:
                        break
            if len(accepted) == k:
                break
        chunks.close()  # stops the work ahead
        if len(accepted) < k:
            # The whole pool was streamed without filling the batch: top it up with the most uncertain rejects.
            positions = np.concatenate(seen_pos)
            values = np.concatenate(seen_u)
            taken = set(accepted)
            for i in np.argsort(-values):
                if len(accepted) == k:
                    break
                if int(positions[i]) not in taken:
                    accepted.append(int(positions[i]))
                    accepted_u.append(float(values[i]))
        return Selection(accepted, accepted_u, scored,
                         {"strategy": f"{self.name}/{self.acceptance}",
                          "acceptance_rate": len(accepted) / max(scored, 1)})

    def weigher(self, context: SelectionContext) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """What a candidate's uncertainty is turned into before the accept/reject draw; called once per selection,
        applied to each streamed chunk only (so that the selection stays O(batch))."""
        return lambda positions, u: u
