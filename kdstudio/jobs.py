"""The bulk work kdstudio hands an engine, as picklable jobs: embedding texts, scoring documents with a student, and
predicting with an exported model. A worker calls `job.open(device)` once (it loads the model) and the function it
returns on each batch (see kdstudio.engine for the contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kdstudio.engine import BatchFn, ShardJob, column_matrix, vectors_column, worker_threads
from kdstudio.interfaces import Encoder, Student
from kdstudio.store.vector_shards import VectorShards
from kdstudio.uncertainty import TopUncertain, uncertainty


def _threads(device: str) -> None:
    if device == "cpu":
        import torch

        torch.set_num_threads(worker_threads())


@dataclass(frozen=True)
class EmbedJob(ShardJob):
    """Texts to unit-length vectors, exactly as `kdstudio embed` computes them in-process with the same encoder."""

    # The class travels with the job (pickled by reference), so a worker needs no plugin registry to build it.
    encoder_cls: type[Encoder]
    model: str
    max_length: int
    batch_size: int
    options: dict[str, Any]
    name = "embed"
    gpu = True

    def open(self, device: str = "cpu") -> BatchFn:
        _threads(device)
        embedder = self.encoder_cls(self.model, self.max_length, self.batch_size, **self.options)  # type: ignore[call-arg]
        embedder.device = device
        embedder.load()

        def embed(batch: pa.Table) -> pa.Table:
            vectors = embedder.encode(batch.column("text").to_pylist())
            return pa.table({"id": batch.column("id"), "vector": vectors_column(vectors)})

        return embed


@dataclass(frozen=True)
class ScoreJob(ShardJob):
    """A saved student's class probabilities for pool documents (its input: `vector` or `text`)."""

    # The class travels with the job (pickled by reference), so a worker needs no plugin registry to load it.
    student_cls: type[Student]
    directory: str
    input: str
    vectors_dir: str = ""  # the vector shards, for batches that name rows instead of carrying vectors
    name = "score"

    def probabilities(self, device: str = "cpu") -> Callable[[pa.Table], np.ndarray]:
        """batch -> the student's probabilities of its rows, as a matrix."""
        _threads(device)
        student = self.student_cls.load(Path(self.directory))
        shards = VectorShards.open(Path(self.vectors_dir)) if self.vectors_dir else None

        def features_of(batch: pa.Table) -> Any:
            if self.input != "embeddings":
                return batch.column("text").to_pylist()
            if "vector" in batch.column_names or shards is None:
                return column_matrix(batch.column("vector"))
            return shards.read(batch.column("row").to_numpy())

        def probabilities(batch: pa.Table) -> np.ndarray:
            if not batch.num_rows:
                return np.zeros((0, 1), dtype=np.float32)
            return student.predict_proba(features_of(batch))

        return probabilities

    def open(self, device: str = "cpu") -> BatchFn:
        probabilities = self.probabilities(device)

        def score(batch: pa.Table) -> pa.Table:
            return pa.table({"id": batch.column("id"), "probs": vectors_column(probabilities(batch))})

        return score


@dataclass(frozen=True)
class TopUncertainJob(ScoreJob):
    """The `k` most uncertain pool documents of each batch, as (row, uncertainty, keyed: uncertainty with its tie
    jitter), leaving out the `exclude`d rows: what a worker returns instead of the pool's probabilities, so that the
    driver merges candidates and never holds the pool (kdstudio.uncertainty.TopUncertain). Rows are the documents'
    rows in the vector shards, which also key the tie jitter, as they do in-process."""

    measure: str = "margin"
    k: int = 1
    salt: int = 0
    exclude: tuple[int, ...] = ()
    name = "top-uncertain"

    @property
    def batch_rows(self) -> int:  # type: ignore[override]
        # A batch's vectors are small beside a model's activations on its texts.
        return 8192 if self.input == "embeddings" else ShardJob.batch_rows

    def open(self, device: str = "cpu") -> BatchFn:
        probabilities = self.probabilities(device)
        excluded = np.array(self.exclude, dtype=np.int64)

        def top(batch: pa.Table) -> pa.Table:
            rows = batch.column("row").to_numpy()
            keep = ~np.isin(rows, excluded)
            best = TopUncertain(self.k, self.salt)
            if keep.any():
                best.add(rows[keep], uncertainty(probabilities(batch.filter(pa.array(keep))), self.measure),
                         rows[keep])
            rows, scores, keyed = best.best()
            return pa.table({"row": pa.array(rows, pa.int64()), "uncertainty": scores, "keyed": keyed})

        return top


@dataclass(frozen=True)
class PredictJob(ShardJob):
    """An exported model folder's probabilities, with onnxruntime alone (kdstudio.runtime)."""

    model_dir: str
    name = "predict"
    gpu = True
    key = "row"

    def open(self, device: str = "cpu") -> BatchFn:
        from kdstudio.runtime import Classifier

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else \
            ["CPUExecutionProvider"]
        classifier = Classifier(self.model_dir, threads=worker_threads() if device == "cpu" else None,
                                providers=providers)

        def predict(batch: pa.Table) -> pa.Table:
            probs = classifier.predict_proba(batch.column("text").to_pylist())
            return pa.table({"row": batch.column("row"), "probs": vectors_column(probs)})

        return predict
