"""The `--json` form of the read commands: plain documents with a stable schema each (kdstudio/schemas/*.json,
documented in docs/json.md). A field is never renamed or retyped within a schema version; a new field may appear."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from kdstudio.terminal import UNSAFE
from kdstudio.types import (
    AuditReport,
    CheckReport,
    Plugins,
    RoundRow,
    RunRow,
    SpendRow,
    Status,
    auto_warning,
    rule_of,
)

VERSION = 1


def schema_id(name: str) -> str:
    return f"kdstudio.{name}/{VERSION}"


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one document kind, as shipped with kdstudio."""
    return json.loads(resources.files("kdstudio.schemas").joinpath(f"{name}.schema.json").read_text("utf-8"))


def dumps(document: dict[str, Any]) -> str:
    # json escapes C0 controls itself; DEL, C1 controls and bidirectional overrides it leaves raw, so they are written
    # as \u escapes too: the same JSON value, and nothing a terminal acts on.
    text = json.dumps(document, indent=1, ensure_ascii=False, default=_plain)
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # a plugin option's exotic default, say


def _metrics(metrics: dict[str, Any], split: str) -> dict[str, float]:
    return {k: v for k, v in metrics.get(split, {}).items() if isinstance(v, int | float)}


def run_document(run: RunRow, rounds: list[RoundRow]) -> dict[str, Any]:
    done = [r for r in rounds if r.phase == "done"]
    best = run.kept(rounds)
    config = run.config
    return {
        "id": run.id, "status": run.status, "simulated": run.simulated,
        "teacher": config.get("teacher"), "teacher_model": config.get("teacher_options", {}).get("model"),
        "selector": config.get("selector"), "student": config.get("student"),
        "rounds": len(done), "labels": done[-1].bought if done else 0,
        "trained_on": done[-1].n_labels if done else 0,
        "spent_usd": float(done[-1].cost_usd or 0.0) if done else 0.0,
        "best_round": run.best_round if best else None,
        "best": {"val": _metrics(best.metrics, "val"), "test": _metrics(best.metrics, "test")} if best else None,
        "warning": auto_warning(best.metrics.get("auto")) if best else None,
        "stop_reason": run.stop_reason, "created_at": run.created_at, "finished_at": run.finished_at,
        "config": config,
    }


def kept_rule(r: RoundRow) -> str | None:
    """The rule that judged a finished round (None for an unfinished one)."""
    return str(rule_of(r.metrics)) if r.phase == "done" else None


def round_document(r: RoundRow) -> dict[str, Any]:
    m = r.metrics
    return {
        "round": r.round, "phase": r.phase, "selector": r.selector, "labels": r.bought if r.phase == "done" else None,
        "trained_on": r.n_labels, "spent_usd": r.cost_usd, "scored": r.scored,
        "val": _metrics(m, "val"), "test": _metrics(m, "test"), "teacher_accuracy": m.get("teacher_accuracy"),
        "check": m.get("check"), "auto": m.get("auto"),
        "best": bool(m.get("best")), "kept_by": kept_rule(r), "free_labels_added": m.get("free_added"),
        "forecast": m.get("forecast"),
    }


def runs_json(runs: list[RunRow], rounds_of: dict[int, list[RoundRow]]) -> dict[str, Any]:
    return {"schema": schema_id("runs"), "runs": [run_document(r, rounds_of.get(r.id, [])) for r in runs]}


def run_json(run: RunRow, rounds: list[RoundRow]) -> dict[str, Any]:
    return {"schema": schema_id("run"), "run": run_document(run, rounds),
            "rounds": [round_document(r) for r in rounds]}


def status_json(status: Status) -> dict[str, Any]:
    gold: dict[str, dict[str, int]] = {label: {"pool": 0, "val": 0, "test": 0} for label in status.labels}
    for label, split, n in status.gold_distribution:
        gold.setdefault(label, {"pool": 0, "val": 0, "test": 0})[split] = n
    return {
        "schema": schema_id("status"), "project": status.name, "labels": status.labels,
        "documents": {"total": status.total_documents,
                      "by_split": [{"split": s, "source": src, "documents": n} for s, src, n in status.documents]},
        "gold": gold,
        "labelled": {label: n for label, n in status.label_distribution},
        "labels_by_source": {source: n for source, n in status.labels_by_source},
        "embeddings": [{"key": key, "documents": n, "dim": dim, "in_use": key == status.vectors_in_use}
                       for key, n, dim in status.embeddings],
        "spend": {"usd": status.spend_usd, "teacher_calls": status.teacher_calls,
                  "teacher_errors": status.teacher_errors},
        "runs": [{"id": r.id, "status": r.status, "simulated": r.simulated, "stop_reason": r.stop_reason}
                 for r in status.runs],
        "check": status.check,
    }


def check_json(report: CheckReport) -> dict[str, Any]:
    student = report.student or {}
    return {"schema": schema_id("check"), "sample": report.truth.counts(report.size),
            "needed": report.needed,
            "student": {"id": student["id"], "run": student["run_id"], "round": student["round"]} if student else None,
            "teacher": report.teacher,
            "grades": None if report.grades is None else report.grades.as_dict()}


SPEND_FIELDS = ("calls", "label_calls", "generate_calls", "errors", "transient", "tokens_in", "tokens_out", "reused",
                "judged", "correct", "requests", "unusable", "unusable_usd")


def cost_json(rows: list[SpendRow]) -> dict[str, Any]:
    total: dict[str, Any] = {f: sum(getattr(r, f) for r in rows) for f in SPEND_FIELDS}
    total["usd"] = sum(r.usd for r in rows)
    total["retries"] = retries_total(rows)
    return {
        "schema": schema_id("cost"),
        "rows": [{"run": r.run_id, "model": r.model, **{f: getattr(r, f) for f in SPEND_FIELDS}, "usd": r.usd,
                  "retries": r.retries, "mean_latency_s": r.mean_latency_s, "accuracy": r.accuracy} for r in rows],
        "total": total,
    }


def retries_total(rows: list[SpendRow]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for cause, n in row.retries.items():
            total[cause] = total.get(cause, 0) + n
    return dict(sorted(total.items()))


def plugins_json(plugins: Plugins, kinds: list[str]) -> dict[str, Any]:
    return {
        "schema": schema_id("plugins"),
        "kinds": {kind: [{"name": name, "summary": reg.cls.summary(), "distribution": reg.distribution,
                          "plugin": reg.plugin,
                          "options": [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help,
                                       "choices": list(o.choices) if o.choices else None} for o in reg.cls.options]}
                         for name, reg in sorted(plugins.registered(kind).items())] for kind in kinds},
        "errors": [{"plugin": e.plugin, "distribution": e.distribution, "error": e.error} for e in plugins.errors],
    }


def audit_json(report: AuditReport) -> dict[str, Any]:
    return {"schema": schema_id("audit"), **report.to_dict()}
