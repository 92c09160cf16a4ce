"""Exporting a kept student: the exporter plugin writes the artifact; this module then loads it with the runtime,
checks it against the in-process student on the test split, measures the deferral curve, and writes the model
card."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import __version__
from kdstudio.atomic_dir import check_replaceable, replacing
from kdstudio.errors import KdError
from kdstudio.interfaces import ExportContext, ExportedModel, Student
from kdstudio.modelcard import render_card
from kdstudio.runtime import META, BadModelFolder, Classifier

CARD = "README.md"
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
AGREEMENT_FLOOR = 0.99  # below this share of labels kept on the test split, export says so


@dataclass
class CascadePoint:
    threshold: float
    coverage: float  # share of documents the model answers itself
    accuracy: float | None  # accuracy on those (None when it answers none)


@dataclass
class Parity:
    n: int
    agreement: float  # share of documents where the exported model and the in-process student pick the same label
    max_prob_diff: float
    student_accuracy: float | None
    exported_accuracy: float | None
    exported_macro_f1: float | None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ExportReport:
    model: ExportedModel
    student: dict[str, Any]
    parity: Parity | None
    cascade: list[CascadePoint]
    card: Path
    warnings: list[str] = field(default_factory=list)


def agreement_warnings(parity: Parity | None, precision: str | None) -> list[str]:
    if parity is None or parity.agreement >= AGREEMENT_FLOOR:
        return []
    fix = "export without --quantize for the in-process student's labels" if precision else \
        "report it: an fp32 export should agree exactly"
    return [f"the exported model gives the in-process student's label on only {parity.agreement:.1%} of {parity.n} "
            f"test documents (largest probability difference {parity.max_prob_diff:.2f}); {fix}"]


def cascade_curve(probs: np.ndarray, y: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS
                  ) -> list[CascadePoint]:
    """Coverage and accuracy when every prediction below a confidence threshold is deferred to the LLM."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    points = []
    for t in thresholds:
        kept = confidence >= t
        points.append(CascadePoint(t, float(kept.mean()) if len(y) else 0.0,
                                   float(correct[kept].mean()) if kept.any() else None))
    return points


def compare(exported: np.ndarray, in_process: np.ndarray, y: np.ndarray | None, labels: list[str]) -> Parity:
    from kdstudio.evaluation import evaluate

    agreement = float((exported.argmax(1) == in_process.argmax(1)).mean()) if len(exported) else 1.0
    diff = float(np.abs(exported.astype(np.float64) - in_process).max()) if len(exported) else 0.0
    if y is None or not len(y):
        return Parity(len(exported), agreement, diff, None, None, None)
    ours = evaluate(y, exported.astype(np.float64), labels)
    return Parity(len(exported), agreement, diff, float((in_process.argmax(1) == y).mean()), ours["accuracy"],
                  ours["macro_f1"], ours["per_class"])


def verify(model: ExportedModel, student: Student, features: Any, texts: list[str], y: np.ndarray | None,
           labels: list[str]) -> tuple[Parity | None, list[CascadePoint]]:
    """Run the exported model with the torch-free runtime beside the in-process student on the same documents."""
    if not texts:
        return None, []
    try:
        exported = Classifier(model.directory).predict_proba(texts)
    except BadModelFolder as exc:
        # What the exporter just wrote does not run: no use pointing at the staging folder it was written to.
        raise KdError(f"the {model.details.get('precision', '')} model the {student.name} student exported does not "
                      f"run: {exc.message}", "export without --quantize, and report the problem") from None
    parity = compare(exported, student.predict_proba(features), y, labels)
    return parity, (cascade_curve(exported, y) if y is not None and len(y) else [])


def export_student(student: Student, record: dict[str, Any], exporter: Any, out_dir: Path, context: ExportContext,
                   eval_texts: list[str], eval_features: Any, eval_y: np.ndarray | None,
                   facts: dict[str, Any], step: Callable[[str], None] = lambda _: None) -> ExportReport:
    """The whole folder (model, tokenizer, labels, card) is built and checked beside `out_dir`, then swapped in: an
    export that fails or is killed leaves the previous model as it was. `step` hears each step as it starts."""
    check_replaceable(out_dir, META)
    with replacing(out_dir) as staging:
        step(f"building the ONNX graph{' and quantizing it to int8' if context.quantize else ''}")
        built = exporter.export(student, staging, context)
        step(f"checking the exported model against the in-process student on {len(eval_texts)} test documents")
        parity, cascade = verify(built, student, eval_features, eval_texts, eval_y, context.labels)
        step("writing the model card")
        (staging / CARD).write_text(render_card({
            **facts, "student": record, "labels": context.labels, "model": built.details, "parity": parity,
            "cascade": cascade, "version": __version__,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}), encoding="utf-8")
    model = replace(built, directory=out_dir)
    return ExportReport(model, record, parity, cascade, out_dir / CARD, agreement_warnings(parity, context.quantize))
