"""Run an exported kdstudio classifier with onnxruntime and tokenizers alone: no torch, no transformers.

    from kdstudio.runtime import Classifier
    classifier = Classifier("model-dir")
    classifier.predict(["a text", "another"])        # [Prediction(label=..., confidence=..., probs={...}), ...]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError

MODEL, TOKENIZER, LABELS, META = "model.onnx", "tokenizer.json", "labels.json", "kdstudio_model.json"
DEFER = "defer"


class BadModelFolder(KdError):
    """An exported model folder that cannot be used as it is."""


@dataclass
class Prediction:
    label: str  # DEFER when the confidence is below the threshold asked for
    confidence: float
    probs: dict[str, float]
    predicted: str  # the most probable label, deferred or not

    @property
    def deferred(self) -> bool:
        return self.label == DEFER


def _fix(directory: Path) -> str:
    return f"export it again: `kdstudio export -p PROJECT --out {directory}`"


class Classifier:
    """An exported model folder: model.onnx, tokenizer.json, labels.json and kdstudio_model.json."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 batch_size: int = 16) -> None:
        # Texts per onnxruntime call. On CPU, small length-sorted batches beat large ones: attention memory grows
        # with batch x length^2 (16 was ~20% faster than 64 on 2 cores, docs/benchmarks.md).
        self.directory = Path(directory)
        self.batch_size = batch_size
        self.labels, self.meta = self._read_description()
        self.tokenizer = self._load_tokenizer()
        self.session = self._load_session(threads, providers)

    # -- loading -----------------------------------------------------------------------------------------

    def _read_description(self) -> tuple[list[str], dict[str, Any]]:
        d = self.directory
        if not d.is_dir():
            raise BadModelFolder(f"{d} is not a folder", "give the folder `kdstudio export --out` wrote")
        missing = [name for name in (MODEL, TOKENIZER, LABELS, META) if not (d / name).is_file()]
        if missing:
            raise BadModelFolder(f"{d} lacks {', '.join(missing)}", _fix(d))
        try:
            labels = json.loads((d / LABELS).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadModelFolder(f"{d / LABELS} is not valid JSON: {exc}", _fix(d)) from None
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels) \
                or len(set(labels)) != len(labels):
            raise BadModelFolder(f"{d / LABELS} must be a list of distinct label names", _fix(d))
        try:
            meta = json.loads((d / META).read_text(encoding="utf-8"))
            max_length = int(meta["max_length"])
            positions = meta.get("max_positions")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            raise BadModelFolder(f"{d / META} is not a kdstudio model description", _fix(d)) from None
        if max_length < 1 or (isinstance(positions, int) and max_length > positions):
            raise BadModelFolder(f"{d / META}: max_length {max_length} is outside what the encoder reads "
                                 f"(1 to {positions if isinstance(positions, int) else 'its position limit'})",
                                 f"set max_length to at most {positions}, or {_fix(d)}" if isinstance(positions, int)
                                 else _fix(d))
        return labels, meta

    def _load_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER))
        except Exception as exc:
            raise BadModelFolder(f"{self.directory / TOKENIZER} cannot be read: {exc}", _fix(self.directory)) \
                from None
        tokenizer.enable_truncation(max_length=int(self.meta["max_length"]))
        tokenizer.no_padding()  # padding is per batch, to its longest text
        return tokenizer

    def _load_session(self, threads: int | None, providers: list[str] | None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            session = ort.InferenceSession(str(self.directory / MODEL), options, providers=providers)
        except Exception as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise BadModelFolder(f"{self.directory / MODEL} is not a usable ONNX model: {first}",
                                 _fix(self.directory)) from None
        outputs = {o.name: o for o in session.get_outputs()}
        if "probabilities" not in outputs:
            raise BadModelFolder(f"{self.directory / MODEL} has no 'probabilities' output", _fix(self.directory))
        width = outputs["probabilities"].shape[-1]
        if isinstance(width, int) and width != len(self.labels):
            raise BadModelFolder(f"{self.directory / LABELS} names {len(self.labels)} labels but the model "
                                 f"predicts {width} classes", _fix(self.directory))
        return session

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    # -- predicting --------------------------------------------------------------------------------------

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n_labels) probabilities, in the order given. Batches hold texts of similar length."""
        texts = [t.strip() for t in texts] if self.meta.get("strip_text", True) else list(texts)
        encodings = self.tokenizer.encode_batch(texts) if texts else []
        lengths = np.array([len(e.ids) for e in encodings])
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = np.argsort(lengths, kind="stable")[start:start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, :lengths[i]] = encodings[i].ids
                mask[row, :lengths[i]] = 1
            try:
                out[idx] = self.session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
            except Exception as exc:  # onnxruntime's own errors: a folder whose description does not fit its graph
                first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise BadModelFolder(f"{self.directory / MODEL} failed on a batch of {len(idx)} texts of up to "
                                     f"{width} tokens: {first}", f"check max_length in {META}, or "
                                     + _fix(self.directory)) from None
        return out

    def predict(self, texts: Sequence[str], *, defer_below: float | None = None) -> list[Prediction]:
        """One prediction per text; with `defer_below`, those less confident are labelled "defer" so that the
        caller can send them to the LLM instead."""
        return self.predictions(self.predict_proba(texts), defer_below=defer_below)

    def predictions(self, probs: np.ndarray, *, defer_below: float | None = None) -> list[Prediction]:
        """Predictions from probabilities this model computed (here, or on an engine's workers)."""
        result = []
        for row in probs:
            best = int(row.argmax())
            confidence = float(row[best])
            predicted = self.labels[best]
            label = DEFER if defer_below is not None and confidence < defer_below else predicted
            result.append(Prediction(label, confidence, dict(zip(self.labels, map(float, row), strict=True)),
                                     predicted))
        return result
