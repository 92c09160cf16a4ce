"""An offline teacher: no API key, no network, no money."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kdstudio.interfaces import Doc, Option, TeachContext, Teacher, TeacherLabel

DEFAULT_TEMPERATURE = 0.03
TEMPERATURES = np.geomspace(0.005, 0.5, 61)
MIN_CALIBRATION = 20


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimizes the log loss of labelled examples."""
    rows = np.arange(len(y))
    losses = [-np.log(np.clip(softmax(scores, t)[rows, y], 1e-12, None)).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


class ZeroShotTeacher(Teacher):
    """Offline zero-shot teacher: each document's similarity to each label's description (the bundled MiniLM),
    calibrated into probabilities."""

    name = "zeroshot"
    log_prompts = False
    local = True
    options = (
        Option("template", str, "{description}", "what each label is embedded as; {name} and {description} (the "
                                                 "label's description from kdstudio.toml, else its name)"),
        Option("temperature", float, 0.0, "softmax temperature over cosine similarities; 0: fitted on labelled "
                                          f"examples when there are {MIN_CALIBRATION}+, else {DEFAULT_TEMPERATURE}",
                                              low=0.0),
        Option("calibration_examples", int, 200, "labelled pool documents (human labels first) to fit the "
                                                  "temperature on", low=0),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._fitted: tuple[tuple[str, ...], float] | None = None
        self._label_cache: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def model_name(self) -> str:
        return "zeroshot(all-MiniLM-L6-v2)"

    @property
    def examples_wanted(self) -> int:
        return self.calibration_examples if not self.temperature else 0

    def caveats(self, context: TeachContext) -> list[str]:
        bare = [x for x in context.labels if not context.descriptions.get(x)]
        if not bare or "{description}" not in self.template:
            return []
        n = len(context.labels)
        which = "no label has" if len(bare) == n else f"{len(bare)} of {n} labels have"
        return [f"{which} a description in kdstudio.toml: the zero-shot teacher compares documents with the bare "
                "label names; a sentence per label saying what belongs in it (description = \"...\") usually helps"]

    def _label_texts(self, context: TeachContext) -> list[str]:
        return [self.template.format(name=x, description=context.descriptions.get(x) or x) for x in context.labels]

    def _label_vectors(self, context: TeachContext) -> np.ndarray:
        texts = tuple(self._label_texts(context))
        if texts not in self._label_cache:
            self._label_cache[texts] = self._encode(context, list(texts))
        return self._label_cache[texts]

    def _encode(self, context: TeachContext, texts: list[str]) -> np.ndarray:
        if context.encode is not None:
            return context.encode(texts)
        from kdstudio.config import EmbeddingSettings
        from kdstudio_plugins.encoders.minilm import SentenceTransformerEncoder

        default = EmbeddingSettings()
        return SentenceTransformerEncoder(default.model, default.max_length, default.batch_size).encode(texts)

    def _doc_vectors(self, context: TeachContext, docs: Sequence[Doc]) -> np.ndarray:
        if context.vectors is not None:
            return context.vectors([d.id for d in docs])
        return self._encode(context, [d.text for d in docs])

    def _temperature(self, context: TeachContext, label_vectors: np.ndarray) -> float:
        if self.temperature:
            return self.temperature
        examples = context.examples[:self.calibration_examples]
        if len(examples) < MIN_CALIBRATION:
            return DEFAULT_TEMPERATURE
        key = tuple(doc_id for doc_id, _, _ in examples)
        if self._fitted is None or self._fitted[0] != key:
            index = {x: i for i, x in enumerate(context.labels)}
            usable = [(d, t, lab) for d, t, lab in examples if lab in index]
            vectors = self._doc_vectors(context, [Doc(d, t) for d, t, _ in usable])
            y = np.array([index[lab] for _, _, lab in usable])
            self._fitted = (key, fit_temperature(vectors @ label_vectors.T, y))
        return self._fitted[1]

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        label_vectors = self._label_vectors(context)
        return {"teacher": self.name, "model": context.embedding_model or "all-MiniLM-L6-v2",
                "labels": context.labels, "label_texts": self._label_texts(context),
                "temperature": round(self._temperature(context, label_vectors), 6), "text": doc.text}

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        if not docs:
            return
        label_vectors = self._label_vectors(context)
        temperature = self._temperature(context, label_vectors)
        probs = softmax(self._doc_vectors(context, docs) @ label_vectors.T, temperature)
        for doc, row in zip(docs, probs, strict=True):
            if not context.gate.reserve(0.0):
                return
            best = int(row.argmax())
            label = context.labels[best]
            yield TeacherLabel(doc.id, label, float(row[best]), {x: float(p) for x, p in zip(context.labels, row,
                                                                                              strict=True)},
                               response=label, latency_s=0.0)
