"""Few-shot examples chosen per document: the labelled documents nearest to it in the embedding space (autolabel's
semantic-similarity selection), so that each prompt shows the cases most like the one asked about. The examples are
people's labels (and a corpus's gold), never the teacher's own."""

from __future__ import annotations

import numpy as np

from kdstudio.errors import KdError
from kdstudio.interfaces import Doc, TeachContext


class NearestExamples:
    """The context's labelled examples with their vectors, asked for the k nearest to a document."""

    def __init__(self, examples: list[tuple[str, str, str]], vectors: np.ndarray) -> None:
        self.examples = examples
        self.ids = np.array([doc_id for doc_id, _, _ in examples], dtype=object)
        self.id_rank = np.argsort(np.argsort(self.ids))  # ties go to the smaller id
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.where(norms > 0, norms, 1.0)

    @classmethod
    def of(cls, context: TeachContext) -> NearestExamples | None:
        """None when the context has no examples or no vectors to compare them by."""
        if not context.examples or context.vectors is None:
            return None
        return cls(context.examples, context.vectors([doc_id for doc_id, _, _ in context.examples]))

    def nearest(self, doc: Doc, context: TeachContext, k: int) -> list[tuple[str, str]]:
        """(text, label) of the k examples most like `doc`, the most alike first (ties: by id); `doc` itself is never
        its own example."""
        vector = _vector_of(doc, context)
        if vector is None:
            return []
        similarity = self.vectors @ (vector / (np.linalg.norm(vector) or 1.0))
        order = [i for i in np.lexsort((self.id_rank, -similarity)) if self.ids[i] != doc.id][:k]
        return [(self.examples[i][1], self.examples[i][2]) for i in order]


def _vector_of(doc: Doc, context: TeachContext) -> np.ndarray | None:
    """The document's stored vector, or its text embedded now (a document the teacher wrote has none stored)."""
    if context.vectors is not None:
        try:
            return np.asarray(context.vectors([doc.id]), dtype=np.float32)[0]
        except KdError:
            pass
    if context.encode is not None:
        return np.asarray(context.encode([doc.text]), dtype=np.float32)[0]
    return None
