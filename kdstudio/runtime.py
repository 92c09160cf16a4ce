"""Run an exported kdstudio classifier with onnxruntime and tokenizers alone: no torch, no transformers.

    from kdstudio.runtime import Classifier
    classifier = Classifier("model-dir")
    classifier.predict(["a text", "another"])        # [Prediction(label=..., confidence=..., probs={...}), ...]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError

MODEL, TOKENIZER, LABELS, META = "model.onnx", "tokenizer.json", "labels.json", "kdstudio_model.json"
CASCADE = "cascade.json"
DEFER = "defer"
CHUNK = 16_384  # texts tokenized at once


class BadModelFolder(KdError):
    """An exported model folder that cannot be used as it is."""


@dataclass
class Prediction:
    label: str  # DEFER when the confidence is below the threshold asked for
    confidence: float
    probs: dict[str, float]
    predicted: str  # the most probable label, deferred or not
    tier: str | None = None  # in a cascade, the tier that answered

    @property
    def deferred(self) -> bool:
        return self.label == DEFER


def _is_share(value: Any) -> bool:
    """A number between 0 and 1 (JSON's true and false are not, nor NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fix(directory: Path) -> str:
    return f"export it again: `kdstudio export -p PROJECT --out {directory}`"


class Classifier:
    """An exported model folder: model.onnx, tokenizer.json, labels.json and kdstudio_model.json."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 batch_size: int | None = None) -> None:
        self.directory = Path(directory)
        self.labels, self.meta = self._read_description()
        # Texts per onnxruntime call, as the exporter advises. On CPU, small length-sorted batches suit a transformer:
        # attention memory grows with batch x length^2 (16 was ~20% faster than 64 on 2 cores, docs/benchmarks.md);
        # a static encoder is a lookup and wants large ones.
        self.batch_size = batch_size or self._advice("batch_size", int, 16)
        self.batch_tokens_apply = batch_size is None  # a batch size given by the caller is taken as it is
        self.special_tokens = self._advice("special_tokens", bool, True)
        self.char_limit = self._advice("char_limit", int, None)
        self.tokenizer = self._load_tokenizer()
        self.session = self._load_session(threads, providers)
        # Last: a folder damaged in a way that has a more telling name (a missing file, labels that do not match the
        # graph) is told so first; what passes every other check but is not what was exported is caught here.
        self._check_files()

    # -- loading -----------------------------------------------------------------------------------------

    def _read_description(self) -> tuple[list[str], dict[str, Any]]:
        d = self.directory
        if not d.is_dir():
            raise BadModelFolder(f"{d} is not a folder", "give the folder `kdstudio export --out` wrote")
        if (d / "kdstudio.toml").is_file():
            # A project, given where its exported model was meant: the model goes beside it, never into it.
            model = d.parent / f"{d.name}-model" if d.name else Path("..") / f"{d.resolve().name}-model"
            raise BadModelFolder(f"{d} is a kdstudio project, not an exported model folder",
                                 f"export one beside it: `kdstudio export -p {d} --out {model}`, then predict with "
                                 f"{model}")
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

    def _check_files(self) -> None:
        """The checksums the exporter recorded (folders exported before they were recorded have none)."""
        recorded = self.meta.get("sha256")
        if recorded is None:
            return
        if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
            raise BadModelFolder(f"{self.directory / META}: sha256 must map file names to checksums",
                                 _fix(self.directory))
        for name, digest in recorded.items():
            path = self.directory / name
            if name not in (MODEL, TOKENIZER, LABELS) or not path.is_file() or file_sha256(path) != digest:
                raise BadModelFolder(f"{path} is not the file that was exported (its checksum differs from the "
                                     f"one in {META}): changed, truncated or replaced since", _fix(self.directory))

    def _advice(self, key: str, kind: type, default: Any) -> Any:
        """An optional tokenizing setting of kdstudio_model.json, checked: a hand-edited folder fails here, in one
        line, not halfway through a batch."""
        value = self.meta.get(key)
        if value is None:
            return default
        if type(value) is not kind or (kind is int and value < 1):
            wanted = "true or false" if kind is bool else "a positive whole number"
            raise BadModelFolder(f"{self.directory / META}: {key} must be {wanted}, not {value!r}",
                                 _fix(self.directory))
        return value

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
        """The onnxruntime execution provider in use (CPU or CUDA)."""
        return self.session.get_providers()[0]

    # -- predicting --------------------------------------------------------------------------------------

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n_labels) probabilities, in the order given. Texts are tokenized a chunk at a time (a million texts'
        tokens at once would take gigabytes) and run in batches of similar length within each chunk."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            out[start:start + CHUNK] = self._chunk_proba(texts[start:start + CHUNK])
        return out

    def _chunk_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t.strip() for t in texts] if self.meta.get("strip_text", True) else list(texts)
        if isinstance(self.char_limit, int):
            texts = [t[:self.char_limit] for t in texts]  # as the static encoder cut them in training
        # The fast batch encoder skips character offsets, which nothing here reads (tokenizers >= 0.21).
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(texts, add_special_tokens=self.special_tokens) if texts else []
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for idx in self._batches(lengths):
            width = max(1, int(lengths[idx].max()))  # a text with no token still gets a (masked) position
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

    def _batches(self, lengths: np.ndarray) -> Iterator[np.ndarray]:
        """Positions of texts of similar length, shortest first: `batch_size` texts at a time, or, where the model
        advises a token budget (the static encoder: short texts in large batches), as many as fit in it."""
        order = np.argsort(lengths, kind="stable")
        budget = self._advice("batch_tokens", int, None) if self.batch_tokens_apply else None
        if budget is None:
            yield from (order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size))
            return
        widths = np.maximum(lengths[order], 1)
        start = 0
        while start < len(order):
            # Sorted ascending, so the last text sets the batch's width, and count x width only grows: the batch is the
            # longest prefix within the budget (at most `budget` texts, since every width is at least 1).
            window = widths[start:start + budget]
            cost = np.arange(1, len(window) + 1) * window
            end = start + max(1, int(np.searchsorted(cost, budget, side="right")))
            yield order[start:end]
            start = end

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


class Cascade:
    """A cascade model folder: cascade.json and one exported model folder per tier. Each tier answers the texts it is
    at least its threshold sure of and hands the rest down; the last tier answers the rest, and with `defer_below`
    what it doubts too is labelled "defer", for the LLM."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 batch_size: int | None = None) -> None:
        self.directory = Path(directory)
        spec = self._read_spec()
        self.names = [str(t["folder"]) for t in spec["tiers"]]
        self.thresholds = [float(t["answers_at_or_above"]) for t in spec["tiers"][:-1]]
        self.defer_below = spec.get("defer_below")
        self.tiers = [Classifier(self.directory / name, threads=threads, providers=providers, batch_size=batch_size)
                      for name in self.names]
        self.labels = self.tiers[0].labels
        if any(t.labels != self.labels for t in self.tiers):
            raise BadModelFolder(f"the tiers of {self.directory} name different labels", _fix(self.directory))

    def _read_spec(self) -> dict[str, Any]:
        path = self.directory / CASCADE
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            tiers = spec["tiers"]
            ok = isinstance(tiers, list) and len(tiers) >= 2 and all(
                isinstance(t.get("folder"), str) and "/" not in t["folder"] and ".." not in t["folder"]
                for t in tiers) and all(_is_share(t.get("answers_at_or_above")) for t in tiers[:-1]) \
                and (spec.get("defer_below") is None or _is_share(spec["defer_below"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
            ok = False
        if not ok:
            raise BadModelFolder(f"{path} is not a kdstudio cascade description (tiers with folders and thresholds "
                                 "between 0 and 1)", _fix(self.directory))
        return spec

    def answer(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities from the tier that answered each text, and that tier's index."""
        probs = self.tiers[0].predict_proba(texts)
        tier = np.zeros(len(texts), dtype=np.int64)
        pending = np.flatnonzero(probs.max(axis=1) < self.thresholds[0]) if len(texts) else np.zeros(0, np.int64)
        for k in range(1, len(self.tiers)):
            if not len(pending):
                break
            probs[pending] = self.tiers[k].predict_proba([texts[i] for i in pending])
            tier[pending] = k
            if k < len(self.thresholds):
                pending = pending[probs[pending].max(axis=1) < self.thresholds[k]]
        return probs, tier

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n_labels) probabilities, each row from the tier that answered it."""
        return self.answer(texts)[0]

    def predict(self, texts: Sequence[str], *, defer_below: float | None = None) -> list[Prediction]:
        """One prediction per text, with the tier that answered; `defer_below` (default: the folder's) applies to
        the last tier, whose doubts go to the LLM."""
        probs, tier = self.answer(texts)
        below = self.defer_below if defer_below is None else defer_below
        result = self.tiers[0].predictions(probs)
        last = len(self.tiers) - 1
        for p, k in zip(result, tier, strict=True):
            p.tier = self.names[k]
            if below is not None and k == last and p.confidence < below:
                p.label = DEFER
        return result


def open_model(directory: str | Path, **kwargs: Any) -> Classifier | Cascade:
    """An exported model folder or a cascade folder, whichever `directory` holds."""
    return Cascade(directory, **kwargs) if (Path(directory) / CASCADE).is_file() else Classifier(directory, **kwargs)
