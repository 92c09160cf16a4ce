"""The SIMULATED teacher: gold labels, with the kinds of mistakes real teachers make, for benchmarks and tests."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from kdstudio.interfaces import Doc, Option, TeachContext, Teacher, TeacherLabel

NOISE_MODES = ("uniform", "confusion", "difficulty", "hard")
# Difficulty noise: a document at difficulty percentile d is wrong with probability noise * (K+1) * d^K, whose mean
# over the corpus is `noise`: the easiest half is almost never wrong, the hardest tenth most of the time.
DIFFICULTY_POWER = 3


def _doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    # One generator per (seed, document): the same document always gets the same simulated answer.
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def confusion_partner(labels: Sequence[str], gold: str) -> str:
    """Class-conditional noise: classes are confused in adjacent pairs of the label set (0<->1, 2<->3, ...); an odd
    last class is confused with the one before it."""
    i = list(labels).index(gold)
    j = i + 1 if i % 2 == 0 else i - 1
    return labels[j if j < len(labels) else i - 1]


class ReferenceModel:
    """What makes a document hard for the simulated teacher: a nearest-centroid classifier over every gold-labelled
    document's embedding. Its margin on the gold label ranks documents from easy to hard, and its best wrong class
    is the mistake the teacher makes there (a plausible confusion, not a random one)."""

    def __init__(self, labels: Sequence[str], gold: Mapping[str, str], vectors: Any) -> None:
        pairs = sorted(gold.items())  # one read, not a lookup per document
        ids = [d for d, _ in pairs]
        matrix = np.asarray(vectors(ids), dtype=np.float32)
        self.labels = list(labels)
        index = {label: i for i, label in enumerate(self.labels)}
        y = np.array([index[label] for _, label in pairs])
        centroids = np.stack([matrix[y == c].mean(axis=0) if (y == c).any() else np.zeros(matrix.shape[1])
                              for c in range(len(self.labels))])
        self.centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)
        self.vectors = vectors
        self.index = index
        self.reference = np.sort(self._margins(matrix, y)[0])

    def _margins(self, matrix: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Margin of the gold class over the best wrong one, and that wrong class, per row."""
        sims = matrix @ self.centroids.T
        own = sims[np.arange(len(y)), y]
        sims[np.arange(len(y)), y] = -np.inf
        wrong = sims.argmax(axis=1)
        return own - sims[np.arange(len(y)), wrong], wrong

    def judge(self, doc_ids: list[str], gold: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(difficulty percentile in [0, 1], best wrong class index) per document."""
        matrix = np.asarray(self.vectors(doc_ids), dtype=np.float32)
        margins, wrong = self._margins(matrix, np.array([self.index[g] for g in gold]))
        difficulty = 1.0 - np.searchsorted(self.reference, margins, side="left") / max(1, len(self.reference))
        return np.clip(difficulty, 0.0, 1.0), wrong


class OracleTeacher(Teacher):
    """SIMULATED teacher: answers from the gold labels, optionally with realistic noise; for benchmarks and tests."""

    name = "oracle"
    simulated = True
    log_prompts = False
    local = True
    options = (
        Option("noise", float, 0.0, "share of answers that are wrong", low=0.0, high=1.0),
        Option("noise_mode", str, "uniform",
               "which answers are wrong: uniform (any document, any wrong label); confusion (adjacent classes "
               "swapped); difficulty (hard documents by a reference model's margin, mistaken for the nearest "
               "class, with confidences that follow difficulty); hard (where the current student is uncertain)",
               NOISE_MODES),
        Option("confidence_signal", float, 1.0,
               "difficulty noise: how strongly confidences tell right answers from wrong ones (1: far more than an "
               "LLM's logprobs do; 0.4: about as much, an AUROC of 0.72-0.74 measured on bbc-news; 0: not at all)",
               low=0.0, high=1.0),
        Option("runner_up_right", float, 1.0,
               "share of wrong answers whose runner-up class (the next likeliest in the answer's probabilities) is the "
               "right one (1: always, far kinder than real teachers; the zero-shot teacher measured 0.60 on bbc-news "
               "and 0.18 on 20newsgroups); the others' runner-up is another wrong class", low=0.0, high=1.0),
        Option("seed", int, 0, "seed of the simulated noise"),
        Option("delay", float, 0.0, "seconds each answer takes, to simulate an LLM's latency", low=0.0),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._reference: ReferenceModel | None = None

    @property
    def model_name(self) -> str:
        mode = "" if self.noise_mode == "uniform" or self.noise == 0 else f", {self.noise_mode}"
        return f"oracle(simulated, noise={self.noise}{mode})"

    @property
    def wants_difficulty(self) -> bool:
        return self.noise_mode == "hard" and self.noise > 0

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        # Latency does not change the answer, so it stays out of the cache key.
        options = {o.name: getattr(self, o.name) for o in self.options if o.name != "delay"}
        for name in ("confidence_signal", "runner_up_right"):  # defaults keep the keys of answers cached before them
            if options[name] == 1.0:
                del options[name]
        return {"teacher": self.name, "options": options, "labels": context.labels, "doc_id": doc.id}

    def _flip_chances(self, docs: Sequence[Doc], context: TeachContext) -> tuple[np.ndarray, np.ndarray | None]:
        """Per document: the chance its answer is wrong, and (difficulty mode) the class it is mistaken for."""
        n = len(docs)
        if self.noise == 0 or not n:
            return np.zeros(n), None
        if self.noise_mode == "hard":
            hard = np.array([context.difficulty.get(d.id, 1.0) for d in docs])
            mean = hard.mean() if hard.mean() > 0 else 1.0
            return np.minimum(1.0, self.noise * hard / mean), None
        if self.noise_mode != "difficulty":
            return np.full(n, self.noise), None
        if context.vectors is None:
            raise ValueError("difficulty noise needs the project's embeddings")
        if self._reference is None:
            self._reference = ReferenceModel(context.labels, context.gold, context.vectors)
        known = [d.id for d in docs if d.id in context.gold]
        difficulty, mistaken = self._reference.judge(known, [context.gold[d] for d in known])
        by_id = dict(zip(known, zip(difficulty, mistaken, strict=True), strict=True))
        k = DIFFICULTY_POWER
        chance = np.array([min(1.0, self.noise * (k + 1) * by_id[d.id][0] ** k) if d.id in by_id else 0.0
                           for d in docs])
        return chance, np.array([by_id[d.id][1] if d.id in by_id else -1 for d in docs])

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        chances, mistaken = self._flip_chances(docs, context)
        for i, doc in enumerate(docs):
            if not context.gate.reserve(0.0):
                return  # the run stopped asking
            if self.delay:
                time.sleep(self.delay)
            gold = context.gold.get(doc.id)
            if gold is None:
                yield TeacherLabel(doc.id, None, error="the oracle has no gold label for this document")
                continue
            rng = _doc_rng(self.seed, doc.id)
            flipped = len(context.labels) > 1 and rng.random() < chances[i]
            likely = self._likely_mistake(context.labels, gold, None if mistaken is None else int(mistaken[i]))
            if flipped:
                # Uniform noise draws its wrong label only when it needs one, so its answers stay what they were.
                answer = likely or str(rng.choice([x for x in context.labels if x != gold]))
                runner_up = self._wrong_runner_up(context.labels, gold, answer, rng)
            else:
                answer, runner_up = gold, likely or gold
            yield self._answer(doc.id, answer, runner_up, flipped, float(chances[i]), context.labels, rng)

    def _wrong_runner_up(self, labels: list[str], gold: str, answer: str, rng: np.random.Generator) -> str:
        """A wrong answer's runner-up: the right class with chance runner_up_right, else another wrong one. No draw is
        made at the default, so that the answers stay what they were before the option existed."""
        others = [x for x in labels if x not in (gold, answer)]
        if self.runner_up_right == 1.0 or not others or rng.random() < self.runner_up_right:
            return gold
        return str(rng.choice(others))

    def _likely_mistake(self, labels: list[str], gold: str, mistaken: int | None) -> str | None:
        """The label this document is mistaken for under structured noise (None: any wrong label)."""
        if self.noise_mode == "confusion":
            return confusion_partner(labels, gold)
        if mistaken is not None and mistaken >= 0:
            return labels[mistaken]
        return None

    def _answer(self, doc_id: str, answer: str, runner_up: str, flipped: bool, chance: float, labels: list[str],
                rng: np.random.Generator) -> TeacherLabel:
        """Confidences that are informative but imperfect, as an LLM's logprobs are: wrong answers and hard documents
        tend to be less confident, with overlap; the runner-up class holds most of the rest."""
        if self.noise == 0:
            confidence = 1.0
        elif self.noise_mode == "difficulty":
            hardness = min(1.0, chance / (self.noise * (DIFFICULTY_POWER + 1)))  # d^K, in [0, 1]
            # Wrong answers are 0.15 less confident on average, with a spread of 0.12 (alone, an AUROC near 0.75);
            # hardness lowers both, and wrong answers are the hard ones: measured on the benchmark's labels, the
            # AUROC is 0.90-0.98 (docs/benchmarks.md), more telling than most LLM logprobs. confidence_signal scales
            # both shifts down towards an LLM's weaker signal.
            centre = 0.95 - self.confidence_signal * ((0.15 if flipped else 0.0) + 0.35 * hardness)
            confidence = float(np.clip(centre + rng.normal(0.0, 0.12), 1.0 / len(labels) + 0.01, 0.995))
        else:
            low, high = (0.3, 0.75) if flipped else (0.6, 1.0)
            confidence = float(rng.uniform(low, high))
        probs = {x: 0.0 for x in labels}
        others = [x for x in labels if x not in (answer, runner_up)]
        rest = 1.0 - confidence
        probs[answer] = confidence
        if runner_up != answer:
            probs[runner_up] = rest * (0.7 if others else 1.0)
            rest -= probs[runner_up]
        for x in others:
            probs[x] = rest / len(others)
        return TeacherLabel(doc_id, answer, confidence, probs, response=answer, latency_s=0.0)
