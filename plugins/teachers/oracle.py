from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kdstudio.interfaces import Doc, Option, TeachContext, Teacher, TeacherLabel


def _doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    # One generator per (seed, document): the same document always gets the same simulated answer.
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class OracleTeacher(Teacher):
    """SIMULATED teacher: answers from the gold labels, optionally with noise; for benchmarks and tests."""

    name = "oracle"
    simulated = True
    log_prompts = False
    options = (
        Option("noise", float, 0.0, "share of answers flipped to a wrong label"),
        Option("noise_mode", str, "uniform", "which answers are wrong: uniform, or hard (where the student is "
                                             "uncertain)", ("uniform", "hard")),
        Option("seed", int, 0, "seed of the simulated noise"),
        Option("delay", float, 0.0, "seconds each answer takes, to simulate an LLM's latency"),
    )

    @property
    def model_name(self) -> str:
        return f"oracle(simulated, noise={self.noise})"

    @property
    def wants_difficulty(self) -> bool:
        return self.noise_mode == "hard" and self.noise > 0

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        # Latency does not change the answer, so it stays out of the cache key.
        options = {o.name: getattr(self, o.name) for o in self.options if o.name != "delay"}
        return {"teacher": self.name, "options": options, "labels": context.labels, "doc_id": doc.id}

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        labels = context.labels
        difficulty = np.array([context.difficulty.get(d.id, 1.0) for d in docs]) if docs else np.zeros(0)
        mean = difficulty.mean() if len(difficulty) and difficulty.mean() > 0 else 1.0
        for doc, hard in zip(docs, difficulty, strict=True):
            if not context.gate.reserve(0.0):
                return  # the run stopped asking
            if self.delay:
                time.sleep(self.delay)
            gold = context.gold.get(doc.id)
            if gold is None:
                yield TeacherLabel(doc.id, None, error="the oracle has no gold label for this document")
                continue
            rng = _doc_rng(self.seed, doc.id)
            flip_p = self.noise if self.noise_mode == "uniform" else min(1.0, self.noise * hard / mean)
            flipped = len(labels) > 1 and rng.random() < flip_p
            answer = rng.choice([x for x in labels if x != gold]) if flipped else gold
            # A simulated, imperfectly calibrated confidence: wrong answers tend to be less confident.
            low, high = (0.3, 0.75) if flipped else (0.6, 1.0)
            confidence = 1.0 if self.noise == 0 else float(rng.uniform(low, high))
            rest = (1.0 - confidence) / max(1, len(labels) - 1)
            probs = {x: (confidence if x == answer else rest) for x in labels}
            yield TeacherLabel(doc.id, str(answer), confidence, probs, response=str(answer), latency_s=0.0)
