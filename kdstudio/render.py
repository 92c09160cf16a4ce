"""Rich renderings of façade results for the command line."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from kdstudio.money import usd
from kdstudio.types import (
    Agreement,
    AuditReport,
    CascadeReport,
    ExportReport,
    Plan,
    Plugins,
    RoundReport,
    RoundRow,
    RunResult,
    RunRow,
    RunStarted,
    SpendRow,
    Status,
    TeacherChecked,
)

KIND_TITLES = {
    "selector": "Selectors", "teacher": "Teachers", "student": "Students", "exporter": "Exporters",
    "review_backend": "Review backends", "dataset": "Datasets", "engine": "Engines", "doubt": "Label doubts",
    "free_labels": "Free labellers", "encoder": "Encoders",
}


def status_view(status: Status) -> Group:
    docs = Table(title=f"Project {status.name}: {status.total_documents} documents", title_justify="left")
    for column in ("split", "source", "documents"):
        docs.add_column(column, justify="right" if column == "documents" else "left")
    for split, source, n in status.documents:
        docs.add_row(split, source, str(n))

    labels = Table(title="Labels", title_justify="left")
    labels.add_column("label")
    labels.add_column("gold (pool/val/test)", justify="right")
    labels.add_column("labelled", justify="right")
    gold: dict[str, dict[str, int]] = {}
    for label, split, n in status.gold_distribution:
        gold.setdefault(label, {})[split] = n
    current = dict(status.label_distribution)
    for label in status.labels:
        g = gold.get(label, {})
        labels.add_row(label, "/".join(str(g.get(s, 0)) for s in ("pool", "val", "test")),
                       str(current.get(label, 0)))

    by_source = ", ".join(f"{source} {n}" for source, n in status.labels_by_source) or "none yet"
    coverage = Table(title="Embeddings", title_justify="left")
    for column in ("model", "documents", "coverage", "dim"):
        coverage.add_column(column)
    for model, n, dim in status.embeddings:
        share = f"{100 * n / status.total_documents:.1f}%" if status.total_documents else "-"
        coverage.add_row(f"{model} (in use)" if model == status.vectors_in_use else model, str(n), share, str(dim))
    if not status.embeddings:
        coverage.add_row("none yet (run `kdstudio embed`)", "0", "0%", "-")
    money = (f"Teacher labels by source: {by_source}\n"
             f"Spent: {usd(status.spend_usd)} on {status.teacher_calls} teacher calls "
             f"({status.teacher_errors} failed)")
    parts: list = [docs, labels, coverage, money]
    if status.runs:
        latest = status.runs[-1]
        simulated = sum(run.simulated for run in status.runs)
        parts.append(f"Runs: {len(status.runs)}; latest #{latest.id} {latest.status} "
                     f"({latest.config.get('selector')} / {latest.config.get('student')})"
                     + (f": {latest.stop_reason}" if latest.status in ("interrupted", "failed") else ""))
        if simulated:
            parts.append(Text(f"{simulated} of them used a SIMULATED teacher (gold labels, not an LLM)",
                              "bold yellow"))
    return Group(*parts)


def plugins_view(plugins: Plugins) -> Group:
    parts: list = []
    for kind, title in KIND_TITLES.items():
        registered = plugins.registered(kind)
        table = Table(title=f"{title} ({len(registered)})", title_justify="left", expand=True)
        table.add_column("name", no_wrap=True)
        table.add_column("what it does", ratio=3)
        table.add_column("options", ratio=2)
        table.add_column("from", no_wrap=True)
        for name, reg in sorted(registered.items()):
            options = "\n".join(o.describe() for o in reg.cls.options) or "-"
            table.add_row(name, reg.cls.summary(), options, reg.distribution)
        if not registered:
            table.add_row("-", "none registered", "", "")
        parts.append(table)
    for error in plugins.errors:
        parts.append(Text(f"plugin {error.plugin} ({error.distribution}) failed to load and was skipped: "
                          f"{error.error}", "red"))
    return Group(*parts)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[int((v - low) / span * (len(SPARKS) - 1))] for v in values)


def _metric(metrics: dict, split: str, name: str) -> str:
    value = metrics.get(split, {}).get(name)
    return "-" if value is None else f"{value:.3f}"


def simulated_banner() -> Text:
    return Text(" SIMULATED TEACHER: labels come from gold, not from an LLM ", "bold black on yellow")


def budget_line(run_event: RunStarted) -> str:
    """What a run is about to buy, said before it buys anything."""
    config = run_event.config
    caps = [f"{config['budget_calls']} teacher calls" if config.get("budget_calls") is not None else "",
            f"{usd(config['budget_usd'])}" if config.get("budget_usd") is not None else ""]
    capped = " and ".join(c for c in caps if c)
    return (f"buys up to {run_event.train_labels} training labels and {run_event.val_labels} validation labels "
            f"(one teacher call each; unusable answers are asked again and paid)"
            + (f"; every call, validation included, stops at {capped}" if capped else ""))


def spent_line(result: RunResult) -> str:
    """What a run bought, all in."""
    return (f"bought {result.train_labels} training labels and {result.val_labels} validation labels in "
            f"{result.calls} teacher calls, {usd(result.cost_usd)}")


def teacher_check_lines(event: TeacherChecked) -> tuple[list[Text], list[Text]]:
    """The free check of a teacher: its agreement with human and gold labels, and each warning (styled yellow)."""
    agreement = [Text(f"teacher check: {event.teacher} agrees with {share:.3f} of {n} {kind} labels")
                 for kind, share, n in event.agreement]
    warnings = [Text.assemble(("warning: ", "bold yellow"), (f"the teacher {event.teacher}: {w}", "yellow"))
                for w in event.warnings]
    return agreement, warnings


def round_line(report: RoundReport) -> str:
    m = report.metrics
    teacher = m.get("teacher_accuracy")
    return (f"round {report.round:>3}  labels {report.n_labels:>5}  calls {report.calls:>5}  "
            f"spent {usd(report.cost_usd)}  "
            f"val acc {_metric(m, 'val', 'accuracy')} F1 {_metric(m, 'val', 'macro_f1')}  "
            f"test acc {_metric(m, 'test', 'accuracy')} F1 {_metric(m, 'test', 'macro_f1')}  "
            f"teacher acc {'-' if teacher is None else f'{teacher:.3f}'}  scored {report.scored:>7}"
            f"{f'  +{report.generated} generated' if report.generated else ''}"
            f"{f'  doubted {doubted}' if (doubted := m.get('doubted')) else ''}"
            f"{f'  {free}' if (free := m.get('free_labels')) else ''}{forecast_text(m.get('forecast'))}"
            f"{'  *best' if report.best else ''}")


def forecast_text(forecast: dict[str, Any] | None) -> str:
    """The autopilot's forecast, as a round line shows it: validation-accuracy points the next labels would add."""
    if not forecast:
        return ""
    gain = forecast["gain"]
    shown = "inf" if gain == float("inf") else f"{100 * gain:+.2f}"
    return f"  forecast {shown} pt/{forecast['per']}"


def runs_view(runs: list[RunRow], rounds_of: dict[int, list[RoundRow]]) -> Group:
    table = Table(title="Runs", title_justify="left")
    for column in ("run", "status", "teacher", "selector", "student", "rounds", "labels", "spent", "best",
                   "test acc (best)", "test accuracy curve", "stopped because"):
        table.add_column(column)
    for run in runs:
        rounds = [r for r in rounds_of.get(run.id, []) if r.phase == "done"]
        config = run.config
        best = next((r for r in rounds if r.round == run.best_round), None)
        curve = [r.metrics.get("test", r.metrics.get("val", {})).get("accuracy", 0.0) for r in rounds]
        model = config.get("teacher_options", {}).get("model")
        teacher = Text.assemble(config.get("teacher", "?") + (f" {model}" if model else ""),
                                (" (SIMULATED)" if run.simulated else "", "bold yellow"))
        table.add_row(
            str(run.id), run.status, teacher, config.get("selector", "?"), config.get("student", "?"),
            str(len(rounds)), str(rounds[-1].n_labels if rounds else 0),
            usd(rounds[-1].cost_usd or 0) if rounds else "$0", str(run.best_round if best else "-"),
            _metric(best.metrics, "test", "accuracy") if best else "-", sparkline(curve), run.stop_reason or "",
        )
    return Group(table)


def run_curve_view(run: RunRow, rounds: list[RoundRow]) -> Group:
    doubt = run.config.get("doubt")
    options = " ".join(f"{k}={v}" for k, v in run.config.get("doubt_options", {}).items())
    doubted = f" / doubt {doubt}{f' ({options})' if options else ''}" if doubt else ""
    free_labels = f" / free labels {run.config['free_labels']}" if run.config.get("free_labels") else ""
    table = Table(title=f"Run {run.id}: {run.config.get('selector')} / {run.config.get('student')} / "
                        f"{run.config.get('teacher')}{doubted}{free_labels}", title_justify="left")
    free = bool(run.config.get("free_labels"))
    autopilot = bool(run.config.get("stop_when_gain_below"))
    columns = ["round", "labels", "spent", "scored", "val acc", "val F1", "val loss", "test acc", "test F1",
               "test ECE", "teacher acc", *(["free labels"] if free else []),
               *([f"forecast pt/{run.config['stop_when_gain_below'].split('/')[-1]}"] if autopilot else []), "best"]
    for column in columns:
        table.add_column(column, justify="right")
    for r in rounds:
        if r.phase != "done":
            table.add_row(str(r.round), "…", "", "", "(interrupted: resume with --resume)", *[""] * (len(columns) - 5))
            continue
        m = r.metrics
        teacher = m.get("teacher_accuracy")
        extra = ([f"+{m.get('free_added', 0)}"] if free else []) + (
            [forecast_text(m.get("forecast")).split()[-2] if m.get("forecast") else "-"] if autopilot else [])
        table.add_row(str(r.round), str(r.n_labels), usd(r.cost_usd or 0), str(r.scored or 0),
                      _metric(m, "val", "accuracy"), _metric(m, "val", "macro_f1"), _metric(m, "val", "log_loss"),
                      _metric(m, "test", "accuracy"), _metric(m, "test", "macro_f1"), _metric(m, "test", "ece"),
                      "-" if teacher is None else f"{teacher:.3f}", *extra, "*" if m.get("best") else "")
    parts: list = [table]
    if run.simulated:
        parts.insert(0, simulated_banner())
    return Group(*parts)


def cost_view(rows: list[SpendRow]) -> Group:
    table = Table(title="Teacher spend by run and model", title_justify="left")
    for column in ("run", "model", "calls", "label", "generate", "errors", "transient", "tokens in", "tokens out",
                   "USD", "mean latency", "reused", "accuracy"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for r in rows:
        table.add_row("-" if r.run_id is None else str(r.run_id), Text(r.model), str(r.calls), str(r.label_calls),
                      str(r.generate_calls), str(r.errors), str(r.transient), f"{r.tokens_in:,}",
                      f"{r.tokens_out:,}", usd(r.usd),
                      "-" if r.mean_latency_s is None else f"{r.mean_latency_s:.2f}s", str(r.reused),
                      "-" if r.accuracy is None else f"{r.accuracy:.3f} ({r.judged})")
    if rows:
        table.add_section()
        table.add_row("total", "", str(sum(r.calls for r in rows)), str(sum(r.label_calls for r in rows)),
                      str(sum(r.generate_calls for r in rows)), str(sum(r.errors for r in rows)),
                      str(sum(r.transient for r in rows)), f"{sum(r.tokens_in for r in rows):,}",
                      f"{sum(r.tokens_out for r in rows):,}", usd(sum(r.usd for r in rows)), "",
                      str(sum(r.reused for r in rows)), "")
    note = ("reused: labels a run took from the ledger (the cache) instead of paying for a call; accuracy: answers "
            "that agree with a person's or the gold label (how many were judged); a committee's or cascade's own "
            "row holds its verdicts, which cost nothing beyond its members' calls")
    return Group(table, note)


def teacher_line(result: RunResult, teacher_on_test: float | None) -> Text:
    """The student beside its teacher: on the test split when the teacher's own accuracy there is known, else beside
    the teacher's accuracy on the labels it sold."""
    best = next((r for r in result.rounds if r.round == result.best_round), None)
    student = best.metrics.get("test", {}).get("accuracy") if best else None
    if student is None:
        return Text("          no gold test split: the student cannot be compared with its teacher")
    if teacher_on_test is None:
        sold = best.metrics.get("teacher_accuracy") if best else None
        return Text(f"          student test accuracy {student:.3f}; the teacher was right on "
                    f"{'-' if sold is None else f'{sold:.3f}'} of the labels it sold")
    verdict = ("the student has passed its teacher" if student > teacher_on_test else
               "the student has not passed its teacher yet")
    return Text.assemble(f"          student test accuracy {student:.3f}, teacher {teacher_on_test:.3f} on the same "
                         "documents: ", (verdict, "bold green" if student > teacher_on_test else "yellow"))


def audit_view(report: AuditReport, project_dir: str) -> Group:
    table = Table(title=f"Teacher labels most likely wrong ({report.doubt}, out-of-fold {report.student})",
                  title_justify="left")
    for column in ("#", "document", "teacher said", "conf", "student belief", "student says", "suspicion",
                   "nearest labelled", "text"):
        table.add_column(column, justify="right" if column in ("#", "conf", "student belief", "suspicion") else "left",
                         overflow="fold", ratio=3 if column == "text" else None)
    for rank, s in enumerate(report.suspects, 1):
        near = ", ".join(f"{n.label} {n.similarity:.2f}{'*' if n.source == 'human' else ''}" for n in s.neighbours)
        table.add_row(Text(f"{rank}{'!' if s.flagged else ''}"), Text(s.doc_id), Text(s.label),
                      "-" if s.confidence is None else f"{s.confidence:.2f}", f"{s.belief:.2f}", Text(s.student_label),
                      f"{s.suspicion:.2f}", Text(near), Text(" ".join(s.text.split())[:160]))
    return Group(table, Text(
        f"judged {report.judged} teacher labels ({report.trusted} human labels trusted beside them): "
        f"{report.flagged} flagged as likely wrong (!). * marks a human-labelled neighbour.\n"
        f"Send them to people first: kdstudio review push -p {project_dir} --filter suspect (or the Triage tab's "
        "suspect order, key o)."))


def plan_view(plan: Plan) -> Group:
    est = plan.labels
    table = Table(title=f"Plan for teacher {plan.teacher}: nothing was sent", title_justify="left")
    for column in ("what", "requests", "prompt tokens each", "answer tokens each", "USD each", "USD"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row(f"labels ({plan.n_train} training + {plan.n_val} validation)", f"{est.n_docs:,}",
                  f"{est.tokens_in_per_doc:,.0f}", f"{est.tokens_out_per_doc:,.0f}", f"${est.usd_per_doc:.6f}",
                  usd(est.usd))
    if plan.generation is not None:
        g = plan.generation
        table.add_row("PGKD generation", f"{g.n_docs:,}", f"{g.tokens_in_per_doc:,.0f}",
                      f"{g.tokens_out_per_doc:,.0f}", f"${g.usd_per_doc:.6f}", usd(g.usd))
    table.add_section()
    table.add_row("total", "", "", "", "", usd(plan.usd))
    notes = [f"price: {est.price_source}",
             "an upper bound: answers already in the ledger are reused for free, and a run stops at its budget"]
    if not est.priced:
        notes.insert(0, Text("the price is unknown: give --price-in and --price-out to plan a USD budget",
                             "bold red"))
    return Group(table, *notes)


def export_view(report: ExportReport) -> Group:
    model = report.model
    parts: list = [Text.assemble(("exported", "bold"), f" student {report.student['id']} ({report.student['kind']}, "
                                 f"run {report.student['run_id']}, round {report.student['round']}) to "
                                 f"{model.directory}: {', '.join(model.files)} and README.md (the model card)"),
                   ", ".join(f"{k} {v}" for k, v in model.details.items())]
    p = report.parity
    if p is not None:
        parts.append(f"checked on {p.n} test documents with the onnxruntime runtime: same label as the in-process "
                     f"student for {p.agreement:.1%}, largest probability difference {p.max_prob_diff:.2e}; "
                     f"accuracy {_num(p.exported_accuracy)} (in-process {_num(p.student_accuracy)})")
    if report.cascade:
        table = Table(title="Deferral on the test split: predictions below the threshold go to the LLM",
                      title_justify="left")
        for column in ("threshold", "answered here", "accuracy on those"):
            table.add_column(column, justify="right")
        for point in report.cascade:
            table.add_row(f"{point.threshold:.2f}", f"{point.coverage:.1%}", _num(point.accuracy))
        parts.append(table)
    return Group(*parts)


def cascade_view(report: CascadeReport) -> Group:
    table = Table(title=f"Cascade on {report.n_test} test documents", title_justify="left")
    for column in ("tier", "encoder", "answered", "accuracy there"):
        table.add_column(column, justify="left" if column in ("tier", "encoder") else "right")
    for tier in report.tiers:
        table.add_row(tier.name, tier.encoder, f"{tier.share:.1%}", _num(tier.accuracy))
    lines: list = [Text.assemble(("exported", "bold"), f" a cascade to {report.directory}: the fast tier answers at "
                                 f"confidence >= {report.threshold:.3f}, chosen on {report.n_val} validation "
                                 f"documents for accuracy {report.target:.3f} (reached {report.val_accuracy:.3f}; the "
                                 f"kept student alone {report.val_slow_accuracy:.3f})"), table,
                   f"accuracy {_num(report.accuracy)} against {_num(report.slow_accuracy)} for the kept student alone"]
    if report.deferred is not None:
        lines.append(f"deferred to the LLM (below {report.defer_below}): {report.deferred:.1%}")
    return Group(*lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def agreement_view(report: Agreement) -> Group:
    if not report.n:
        return Group("no document has both a teacher label and a human label yet: `kdstudio review push`, label, "
                     "then `kdstudio review pull`")
    table = Table(title=f"Teacher against people: {report.agreed}/{report.n} agreed, accuracy "
                        f"{report.accuracy:.3f}", title_justify="left")
    for column in ("label (people's)", "documents", "teacher agreed", "accuracy"):
        table.add_column(column, justify="left" if column.startswith("label") else "right")
    for label, (n, ok) in report.per_class.items():
        table.add_row(label, str(n), str(ok), f"{ok / n:.3f}")
    parts: list = [table]
    if report.confusions:
        parts.append("most common mistakes: " + "; ".join(f"teacher {t} where people said {h} ({n})"
                                                          for t, h, n in report.confusions[:5]))
    return Group(*parts)
