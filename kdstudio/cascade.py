"""Tiers in a cascade: a fast student (static embeddings) answers what it is sure of, the kept student the rest, and
what that one doubts can go to the LLM. The fast student learns from the labels the kept student's run holds, on
the fast encoder's vectors; the threshold between them is chosen on the validation split for a target accuracy;
the folder is built beside its destination and swapped in whole, then measured on the test split with the runtime."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import __version__
from kdstudio.atomic_dir import check_replaceable, replacing
from kdstudio.interfaces import ExportContext, Exporter, Student
from kdstudio.modelcard import TAGS, hf_metadata
from kdstudio.runtime import CASCADE, Cascade

FAST, SLOW = "fast", "slow"
TOLERANCE = 0.005  # default target: the kept student's validation accuracy less half a point


@dataclass
class TierShare:
    name: str
    encoder: str
    share: float  # of the test documents this tier answered
    accuracy: float | None  # on those


@dataclass
class CascadeReport:
    directory: Path
    threshold: float  # the fast tier answers at or above this confidence
    target: float  # validation accuracy the threshold was chosen for
    val_accuracy: float  # the cascade's, at that threshold
    val_slow_accuracy: float
    n_val: int
    n_test: int
    accuracy: float | None  # the cascade's on the test split (gold)
    slow_accuracy: float | None  # the kept student's alone, exported, on the same documents
    tiers: list[TierShare]
    defer_below: float | None
    deferred: float | None  # share of test documents the last tier doubts (with defer_below)
    warnings: list[str] = field(default_factory=list)


FEW_VAL = 100  # below this many validation documents the threshold's accuracy is too uncertain to go unsaid


def few_val_warning(n_val: int, accuracy: float) -> list[str]:
    """What a threshold chosen on few validation documents is worth: the half-width of a 95% interval of the
    accuracy it was chosen for."""
    if n_val >= FEW_VAL:
        return []
    half = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 0.25 / max(n_val, 1)) / max(n_val, 1))
    return [f"the threshold was chosen on only {n_val} validation documents: the accuracy it aims at is known to about "
            f"+/-{half:.3f} (95%), so the cascade may miss its target by that much; a larger validation split "
            "(`kdstudio split -p DIR val=0.1`, then distill) makes it surer"]


def choose_threshold(fast: np.ndarray, slow: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float]:
    """The lowest confidence threshold (the most answered by the fast tier) at which the cascade's accuracy on these
    documents still reaches `target`; above every confidence (the slow tier answers all) when none does."""
    confidence = fast.max(axis=1)
    fast_right = fast.argmax(axis=1) == y
    slow_right = slow.argmax(axis=1) == y
    order = np.argsort(-confidence, kind="stable")
    # With the k most confident answered by the fast tier: right = fast right among them + slow right among the rest.
    right = np.concatenate([[0], np.cumsum(fast_right[order])]) + \
        np.concatenate([np.cumsum(slow_right[order][::-1])[::-1], [0]])
    accuracy = right / max(len(y), 1)
    for k in range(len(y), 0, -1):
        # Ties: a threshold at a confidence lets every document with that confidence through, so k must end a run.
        if accuracy[k] >= target and (k == len(y) or confidence[order[k]] < confidence[order[k - 1]]):
            return float(confidence[order[k - 1]]), float(accuracy[k])
    return float(np.nextafter(np.float32(1.0), np.float32(2.0))), float(accuracy[0])


@dataclass
class CascadeInputs:
    """What building a cascade needs: both students, their encoders, and the documents to choose and measure on."""

    fast: Student
    slow: Student
    fast_context: ExportContext
    slow_context: ExportContext
    val_fast: np.ndarray  # probabilities on the validation documents
    val_slow: np.ndarray
    val_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray | None
    target: float | None
    defer_below: float | None


def build_cascade(inputs: CascadeInputs, exporter: Exporter, out_dir: Path, card_lines: list[str],
                  card: dict[str, Any]) -> CascadeReport:
    slow_val = float((inputs.val_slow.argmax(axis=1) == inputs.val_y).mean()) if len(inputs.val_y) else 0.0
    target = inputs.target if inputs.target is not None else slow_val - TOLERANCE
    threshold, val_accuracy = choose_threshold(inputs.val_fast, inputs.val_slow, inputs.val_y, target)
    check_replaceable(out_dir, CASCADE)
    with replacing(out_dir) as staging:
        exporter.export(inputs.fast, staging / FAST, inputs.fast_context)
        exporter.export(inputs.slow, staging / SLOW, inputs.slow_context)
        tiers = [{"folder": FAST, "answers_at_or_above": threshold, "encoder": inputs.fast_context.encoder.key},
                 {"folder": SLOW, "encoder": inputs.slow_context.encoder.key}]
        spec = {"format": 1, "kdstudio_version": __version__, "defer_below": inputs.defer_below, "tiers": tiers}
        (staging / CASCADE).write_text(json.dumps(spec, indent=1), encoding="utf-8")
        report = _measure(Cascade(staging), inputs, out_dir, threshold, target, val_accuracy, slow_val)
        report.warnings = few_val_warning(report.n_val, val_accuracy)
        (staging / "README.md").write_text(render_cascade_card(report, card_lines, card), encoding="utf-8")
    return report


def _measure(cascade: Cascade, inputs: CascadeInputs, out_dir: Path, threshold: float, target: float,
             val_accuracy: float, slow_val: float) -> CascadeReport:
    texts, y = inputs.test_texts, inputs.test_y
    probs, tier = cascade.answer(texts) if texts else (np.zeros((0, 1)), np.zeros(0, dtype=np.int64))
    slow = cascade.tiers[-1].predict_proba(texts) if texts else np.zeros((0, 1))
    encoders = [inputs.fast_context.encoder.key, inputs.slow_context.encoder.key]
    shares = []
    for k, name in enumerate(cascade.names):
        mine = tier == k
        accuracy = float((probs[mine].argmax(1) == y[mine]).mean()) if y is not None and mine.any() else None
        shares.append(TierShare(name, encoders[k], float(mine.mean()) if len(tier) else 0.0, accuracy))
    known = y is not None and len(texts) > 0
    deferred = float(((tier == len(cascade.names) - 1) & (probs.max(1) < inputs.defer_below)).mean()) \
        if inputs.defer_below is not None and len(texts) else None
    return CascadeReport(out_dir, threshold, target, val_accuracy, slow_val, len(inputs.val_y), len(texts),
                         float((probs.argmax(1) == y).mean()) if known else None,
                         float((slow.argmax(1) == y).mean()) if known else None, shares, inputs.defer_below, deferred)


def render_cascade_card(r: CascadeReport, card_lines: list[str], card: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [*hf_metadata(str(card.get("project", "")), card, None, r.accuracy, None, (*TAGS, "cascade")),
             f"# Cascade of {len(r.tiers)} tiers", "",
             f"Exported by kdstudio {__version__} on {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"The `{FAST}` tier answers every text it is at least {r.threshold:.3f} sure of; the `{SLOW}` tier "
             "answers the rest" + (f", and labels `defer` (for the LLM) what it is less than {r.defer_below} sure of"
                                   if r.defer_below is not None else "") + ".",
             f"The threshold was chosen on {r.n_val} validation documents for a target accuracy of {r.target:.3f} "
             f"(reached {r.val_accuracy:.3f}; the `{SLOW}` tier alone {r.val_slow_accuracy:.3f}).", "",
             "## Tiers on the test split", "", "| tier | encoder | share answered | accuracy there |",
             "| --- | --- | --- | --- |",
             *[f"| {t.name} | {t.encoder} | {t.share:.1%} | {pct(t.accuracy)} |" for t in r.tiers], "",
             f"Cascade accuracy {pct(r.accuracy)} against {pct(r.slow_accuracy)} for the `{SLOW}` tier alone, on "
             f"{r.n_test} test documents (gold labels)."]
    if r.deferred is not None:
        lines.append(f"Deferred to the LLM: {r.deferred:.1%} of them.")
    lines += [f"Warning: {w}." for w in r.warnings]
    lines += ["", "## Use", "", "```python", "from kdstudio.runtime import Cascade",
              'cascade = Cascade("this-folder")  # onnxruntime and tokenizers only',
              'cascade.predict(["some text"])  # each prediction says which tier answered', "```", "",
              "## The kept student", "", *card_lines, ""]
    return "\n".join(lines)


def fit_like(student_cls: type[Student], options: dict[str, Any], X: np.ndarray, y: np.ndarray,
             n_classes: int) -> Student:
    student = student_cls(**options)
    student.fit(X, y, n_classes)
    return student
