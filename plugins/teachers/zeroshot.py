"""An offline teacher: no API key, no network, no money."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


def _unit(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class LabelSpace:
    """What documents are compared with: a vector per label, and the centre documents are moved by first (None:
    compared as they are)."""

    labels: np.ndarray
    centre: np.ndarray | None = None

    def scores(self, documents: np.ndarray) -> np.ndarray:
        if self.centre is not None:
            documents = _unit(documents - self.centre)
        return documents @ self.labels.T


def with_prototypes(described: np.ndarray, labels: list[str], people: list[tuple[str, str]], vectors: np.ndarray,
                    strength: float) -> LabelSpace:
    """The label set moved towards the documents people gave each label. Both sides are centred first: documents on
    the mean of those people labelled (documents of one corpus share much of their direction, which tells no class
    from another), descriptions on their own mean. Each label is then its centred description averaged with its
    documents' centred mean, weighted n / (n + strength) for n documents, so that a few labels nudge and many lead.
    People's labels of one class alone cannot be centred: the descriptions stay as they are."""
    given = np.array([labels.index(label) for _, label in people])
    if len(set(given.tolist())) < 2:
        return LabelSpace(described)
    centre = vectors.mean(axis=0)
    out = _unit(described - described.mean(axis=0))
    for c in range(len(labels)):
        mine = vectors[given == c]
        if len(mine):
            weight = len(mine) / (len(mine) + strength)
            out[c] = _unit((1 - weight) * out[c] + weight * _unit(mine.mean(axis=0) - centre))
    return LabelSpace(out, centre)


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
        Option("prototypes", float, 10.0, "people's labels as prototypes: each label is embedded as its description "
                                          "and the mean of the pool documents people gave it, the mean weighted "
                                          "n / (n + this) for n such documents; 0: descriptions only", low=0.0),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._fitted: tuple[Any, float] | None = None
        self._label_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._prototypes: tuple[Any, LabelSpace] | None = None

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

    def _label_space(self, context: TeachContext) -> LabelSpace:
        texts = tuple(self._label_texts(context))
        if texts not in self._label_cache:
            self._label_cache[texts] = self._encode(context, list(texts))
        described = self._label_cache[texts]
        people = self._people(context)
        if not people:
            return LabelSpace(described)
        key = (texts, tuple(people))
        if self._prototypes is None or self._prototypes[0] != key:
            self._prototypes = (key, with_prototypes(described, context.labels, people,
                                                     self._doc_vectors(context, [Doc(d, "") for d, _ in people]),
                                                     self.prototypes))
        return self._prototypes[1]

    def _people(self, context: TeachContext) -> list[tuple[str, str]]:
        if not self.prototypes or context.vectors is None:
            return []
        return [(d, label) for d, label in context.people if label in context.labels]

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

    def _temperature(self, context: TeachContext, space: LabelSpace) -> float:
        if self.temperature:
            return self.temperature
        examples = context.examples[:self.calibration_examples]
        if len(examples) < MIN_CALIBRATION:
            return DEFAULT_TEMPERATURE
        # Fitted again when the examples or the label space (people's labels) change.
        key = (tuple(doc_id for doc_id, _, _ in examples), tuple(self._people(context)))
        if self._fitted is None or self._fitted[0] != key:
            index = {x: i for i, x in enumerate(context.labels)}
            usable = [(d, t, lab) for d, t, lab in examples if lab in index]
            vectors = self._doc_vectors(context, [Doc(d, t) for d, t, _ in usable])
            y = np.array([index[lab] for _, _, lab in usable])
            self._fitted = (key, fit_temperature(space.scores(vectors), y))
        return self._fitted[1]

    def request(self, doc: Doc, context: TeachContext) -> dict[str, Any]:
        space = self._label_space(context)
        people = self._people(context)
        return {"teacher": self.name, "model": context.embedding_model or "all-MiniLM-L6-v2",
                "labels": context.labels, "label_texts": self._label_texts(context),
                # people's labels change the answers: the same ones give the same key, without listing them
                "people": hashlib.sha256(repr(people).encode()).hexdigest() if people else None,
                "prototypes": self.prototypes if people else None,
                "temperature": round(self._temperature(context, space), 6), "text": doc.text}

    def label(self, docs: Sequence[Doc], context: TeachContext) -> Iterator[TeacherLabel]:
        if not docs:
            return
        space = self._label_space(context)
        temperature = self._temperature(context, space)
        probs = softmax(space.scores(self._doc_vectors(context, docs)), temperature)
        for doc, row in zip(docs, probs, strict=True):
            if not context.gate.reserve(0.0):
                return
            best = int(row.argmax())
            label = context.labels[best]
            yield TeacherLabel(doc.id, label, float(row[best]), {x: float(p) for x, p in zip(context.labels, row,
                                                                                              strict=True)},
                               response=label, latency_s=0.0)
