"""Rich renderings of façade results for the command line."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.text import Text

from kdstudio.fitted_table import Col, FittedTable
from kdstudio.money import usd
from kdstudio.types import (
    MIN_CHECKED,
    PPI_MIN_CHECKED,
    Agreement,
    AuditReport,
    CascadeReport,
    CheckReport,
    Estimate,
    ExportReport,
    Grades,
    KeptBy,
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
    auto_kept_on,
    auto_text,
    auto_trusted_choice,
    auto_warning,
    narrower,
    rule_of,
)

KIND_TITLES = {
    "selector": "Selectors", "teacher": "Teachers", "student": "Students", "exporter": "Exporters",
    "review_backend": "Review backends", "dataset": "Datasets", "engine": "Engines", "doubt": "Label doubts",
    "free_labels": "Free labellers", "encoder": "Encoders",
}


def status_view(status: Status) -> Group:
    docs = FittedTable(f"Project {status.name}: {status.total_documents} documents",
                       [Col("split"), Col("source"), Col("documents", True)],
                       [[Text(split), Text(source), str(n)] for split, source, n in status.documents])
    gold: dict[str, dict[str, int]] = {}
    for label, split, n in status.gold_distribution:
        gold.setdefault(label, {})[split] = n
    current = dict(status.label_distribution)
    labels = FittedTable("Labels", [Col("label"), Col("gold (pool/val/test)", True), Col("labelled", True)],
                         [[Text(label), "/".join(str(gold.get(label, {}).get(s, 0)) for s in ("pool", "val", "test")),
                           str(current.get(label, 0))] for label in status.labels])
    by_source = ", ".join(f"{source} {n}" for source, n in status.labels_by_source) or "none yet"
    rows = [[Text(f"{model} (in use)" if model == status.vectors_in_use else model), str(n),
             f"{100 * n / status.total_documents:.1f}%" if status.total_documents else "-", str(dim)]
            for model, n, dim in status.embeddings]
    coverage = FittedTable("Embeddings",
                           [Col("model"), Col("documents", True), Col("coverage", True), Col("dim", True)],
                           rows or [["none yet (run `kdstudio embed`)", "0", "0%", "-"]])
    money = (f"Teacher labels by source: {by_source}\n"
             f"Spent: {usd(status.spend_usd)} on {status.teacher_calls} teacher calls "
             f"({status.teacher_errors} failed)")
    parts: list = [docs, labels, coverage, money]
    if status.check["size"]:
        parts.append(check_sample_line(status.check))
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
    columns = [Col("name"), Col("what it does"), Col("options", keep=5), Col("from", keep=4)]
    for kind, title in KIND_TITLES.items():
        registered = plugins.registered(kind)
        rows = [[Text(name), Text(reg.cls.summary()), Text("\n".join(o.describe() for o in reg.cls.options) or "-"),
                 Text(reg.distribution)] for name, reg in sorted(registered.items())]
        parts.append(FittedTable(f"{title} ({len(registered)})", columns,
                                 rows or [["-", "none registered", "", ""]]))
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
    trained = f" (trained on {report.n_labels})" if report.n_labels != report.n_selected else ""
    return (f"round {report.round:>3}  labels {report.n_selected:>5}{trained}  calls {report.calls:>5}  "
            f"spent {usd(report.cost_usd)}  "
            f"agree w/ teacher (val) {_metric(m, 'val', 'accuracy')} F1 {_metric(m, 'val', 'macro_f1')} "
            f"loss {_metric(m, 'val', 'log_loss')}  "
            f"test acc (gold) {_metric(m, 'test', 'accuracy')} F1 {_metric(m, 'test', 'macro_f1')}  "
            f"teacher acc (gold) {'-' if teacher is None else f'{teacher:.3f}'}{check_text(m.get('check'))}  "
            f"scored {report.scored:>7}"
            f"{f'  +{report.generated} generated' if report.generated else ''}"
            f"{f'  doubted {doubted}' if (doubted := m.get('doubted')) else ''}"
            f"{f'  {free}' if (free := m.get('free_labels')) else ''}{forecast_text(m.get('forecast'))}"
            f"{auto_text(m.get('auto'))}"
            f"{best_mark(report)}")


def _kept_by(metrics: dict[str, Any]) -> tuple[str, str]:
    """How a round's student came to be kept, as a round line's mark and in words: the rule that judged it
    (kdstudio.run_state.judge_best), or for rounds recorded before rules were, the one that would judge it now."""
    rule = rule_of(metrics)
    judged = auto_kept_on(metrics)
    if rule == KeptBy.SIGN_TEST and judged:
        return (f"not clearly beaten on {judged['truth']}", f"the latest round, no earlier one clearly more right on "
                f"{judged['n']} {judged['truth']} labels ({judged['accuracy']:.3f})")
    if rule == KeptBy.ACCURACY and judged:
        return (f"most right on {judged['truth']}",
                f"right most often on {judged['n']} {judged['truth']} labels ({judged['accuracy']:.3f})")
    if rule == KeptBy.VAL_LOSS:
        loss = metrics.get("val", {}).get("log_loss")
        return "lowest val loss", "" if loss is None else f"the lowest validation loss ({loss:.3f})"
    if auto_trusted_choice(metrics):
        return "latest", "the latest round (the check sample grades the student, so it does not choose the round)"
    return "latest", "the latest round (no validation labels to choose on)"


def best_reason(metrics: dict[str, Any]) -> str:
    """Why a round's student is the best, in words."""
    return _kept_by(metrics)[1]


def kept_warning(metrics: dict[str, Any]) -> str | None:
    """What a run's summary must add about its kept student: that its trusted labels cannot tell it from a guess."""
    return auto_warning(metrics.get("auto"))


def best_mark(report: RoundReport) -> str:
    if not report.best:
        return ""
    mark = _kept_by(report.metrics)[0]
    return f"  *best ({mark})" if mark else "  *best"


def _check_accuracy(check: dict[str, Any]) -> Estimate:
    """The narrower of a round's two estimates of its student's accuracy on the check sample (sample, PPI)."""
    ppi = check.get("student_accuracy_ppi")
    return narrower(Estimate(**check["student_accuracy"]), Estimate(**ppi) if ppi else None)


def check_cell(check: dict[str, Any] | None) -> str:
    if not check:
        return "-"
    best = _check_accuracy(check)
    return f"{best.value:.3f} [{best.low:.3f}, {best.high:.3f}]"


def check_text(check: dict[str, Any] | None) -> str:
    """The round's student on the check sample, as a round line shows it: accuracy, its 95% interval, its truth."""
    return f"  check acc ({_check_accuracy(check).truth}) {check_cell(check)}" if check else ""


def measured_text(metrics: dict[str, Any]) -> str:
    """A student's figure with the truth it rests on, as a run's summary line shows it: its test accuracy where the
    test split has gold labels; else its accuracy on the check sample, with the interval, where people checked enough
    of it; else its agreement with the teacher, called that, and how to measure more."""
    test = metrics.get("test", {}).get("accuracy")
    if test is not None:
        return f"test accuracy {test:.3f}"
    check = metrics.get("check")
    if check:
        return f"accuracy on the check sample ({_check_accuracy(check).truth}) {check_cell(check)}"
    val = metrics.get("val", {}).get("accuracy")
    agreement = "no validation labels" if val is None else f"agreement with the teacher (val) {val:.3f}, not accuracy"
    return f"{agreement}: nothing gold or checked by people grades it yet (`kdstudio check -p DIR --size 100`)"


def forecast_text(forecast: dict[str, Any] | None) -> str:
    """The autopilot's forecast, as a round line shows it: validation-accuracy points the next labels would add."""
    if not forecast:
        return ""
    gain = forecast["gain"]
    shown = "inf" if gain == float("inf") else f"{100 * gain:+.2f}"
    return f"  forecast {shown} pt/{forecast['per']}"


def runs_view(runs: list[RunRow], rounds_of: dict[int, list[RoundRow]]) -> Group:
    columns = [Col("run", True), Col("status"), Col("teacher", keep=5), Col("selector", keep=6),
               Col("student", keep=6), Col("rounds", True, keep=3), Col("labels", True), Col("spent", True, keep=8),
               Col("best", True, keep=4), Col("test acc (best)", True), Col("check acc (best)", True, keep=5),
               Col("test accuracy curve", keep=1),
               Col("stopped because", keep=2)]
    rows = []
    for run in runs:
        rounds = [r for r in rounds_of.get(run.id, []) if r.phase == "done"]
        config = run.config
        best = run.kept(rounds)
        curve = [r.metrics.get("test", r.metrics.get("val", {})).get("accuracy", 0.0) for r in rounds]
        model = config.get("teacher_options", {}).get("model")
        teacher = Text.assemble(config.get("teacher", "?") + (f" {model}" if model else ""),
                                (" (SIMULATED)" if run.simulated else "", "bold yellow"))
        rows.append([
            str(run.id), run.status, teacher, config.get("selector", "?"), config.get("student", "?"),
            str(len(rounds)), str(rounds[-1].bought if rounds else 0),
            usd(rounds[-1].cost_usd or 0) if rounds else "$0", str(run.best_round if best else "-"),
            _metric(best.metrics, "test", "accuracy") if best else "-",
            check_cell(best.metrics.get("check")) if best else "-",
            sparkline(curve), Text(run.stop_reason or ""),
        ])
    return Group(FittedTable("Runs", columns, rows), MEASURED)


# Which truth each figure rests on, said under every table of runs: agreement with the teacher is not accuracy.
MEASURED = ("val agree: the student's agreement with the teacher's labels on validation documents (not accuracy); "
            "test acc: against gold labels; teacher acc: the teacher against gold; check acc: against the check "
            "sample's reference labels (people's, else gold), with its 95% interval")


def run_curve_view(run: RunRow, rounds: list[RoundRow]) -> Group:
    doubt = run.config.get("doubt")
    options = " ".join(f"{k}={v}" for k, v in run.config.get("doubt_options", {}).items())
    doubted = f" / doubt {doubt}{f' ({options})' if options else ''}" if doubt else ""
    free_labels = f" / free labels {run.config['free_labels']}" if run.config.get("free_labels") else ""
    auto = run.config.get("method") == "auto"
    title = (f"Run {run.id}: {run.config.get('selector')} / {run.config.get('student')} / "
             f"{run.config.get('teacher')}{doubted}{free_labels}{' / method auto' if auto else ''}")
    free = bool(run.config.get("free_labels")) or auto
    autopilot = bool(run.config.get("stop_when_gain_below"))
    columns = [Col("round", True), Col("labels", True), Col("trained on", True, keep=3), Col("spent", True, keep=7),
               Col("scored", True, keep=2),
               Col("val agree", True), Col("val F1", True, keep=5), Col("val loss", True), Col("test acc", True),
               Col("test F1", True, keep=5), Col("test ECE", True, keep=3), Col("teacher acc", True, keep=6),
               Col("check acc", True, keep=5),
               *([Col("free labels", True, keep=4)] if free else []),
               *([Col(f"forecast pt/{run.config['stop_when_gain_below'].split('/')[-1]}", True, keep=4)]
                 if autopilot else []),
               *([Col("auto chose (on whose labels)", keep=8)] if auto else []), Col("best", True)]
    rows = []
    for r in rounds:
        if r.phase != "done":
            rows.append([str(r.round), "…", "", "", "", Text("(interrupted: resume with --resume)"),
                         *[""] * (len(columns) - 6)])
            continue
        m = r.metrics
        teacher = m.get("teacher_accuracy")
        extra = ([f"+{m.get('free_added', 0)}"] if free else []) + (
            [forecast_text(m.get("forecast")).split()[-2] if m.get("forecast") else "-"] if autopilot else []) + (
            [Text(auto_text(m.get("auto")).removeprefix("  auto: ") or "-")] if auto else [])
        rows.append([str(r.round), str(r.bought), str(r.n_labels), usd(r.cost_usd or 0), str(r.scored or 0),
                     _metric(m, "val", "accuracy"), _metric(m, "val", "macro_f1"), _metric(m, "val", "log_loss"),
                     _metric(m, "test", "accuracy"), _metric(m, "test", "macro_f1"), _metric(m, "test", "ece"),
                     "-" if teacher is None else f"{teacher:.3f}",
                     check_cell(m.get("check")),
                     *extra, "*" if m.get("best") else ""])
    table = FittedTable(title, columns, rows)
    parts: list = [table, MEASURED]
    if (kept := run.kept(rounds)) and (warned := kept_warning(kept.metrics)):
        parts.append(Text(f"warning: {warned}", style="yellow"))
    if run.simulated:
        parts.insert(0, simulated_banner())
    return Group(*parts)


def cost_view(rows: list[SpendRow]) -> Group:
    from kdstudio.json_views import retries_total

    columns = [Col("run", True), Col("model"), Col("calls", True), Col("requests", True, keep=6),
               Col("retried", keep=5), Col("unusable", True, keep=6), Col("label", True, keep=3),
               Col("generate", True, keep=2), Col("errors", True, keep=5), Col("transient", True, keep=4),
               Col("tokens in", True, keep=6), Col("tokens out", True, keep=6), Col("USD", True),
               Col("mean latency", True, keep=1), Col("reused", True, keep=7), Col("accuracy", True, keep=7)]
    cells = [["-" if r.run_id is None else str(r.run_id), Text(r.model), str(r.calls), str(r.requests),
              Text(_retried(r.retries)), _unusable(r.unusable, r.unusable_usd), str(r.label_calls),
              str(r.generate_calls), str(r.errors), str(r.transient), f"{r.tokens_in:,}", f"{r.tokens_out:,}",
              usd(r.usd), "-" if r.mean_latency_s is None else f"{r.mean_latency_s:.2f}s", str(r.reused),
              "-" if r.accuracy is None else f"{r.accuracy:.3f} ({r.judged})"] for r in rows]
    total = ["total", "", str(sum(r.calls for r in rows)), str(sum(r.requests for r in rows)),
             Text(_retried(retries_total(rows))),
             _unusable(sum(r.unusable for r in rows), sum(r.unusable_usd for r in rows)),
             str(sum(r.label_calls for r in rows)), str(sum(r.generate_calls for r in rows)),
             str(sum(r.errors for r in rows)), str(sum(r.transient for r in rows)),
             f"{sum(r.tokens_in for r in rows):,}", f"{sum(r.tokens_out for r in rows):,}",
             usd(sum(r.usd for r in rows)), "", str(sum(r.reused for r in rows)), ""]
    table = FittedTable("Teacher spend by run and model", columns, cells, total=total if rows else None)
    note = ("calls: answers recorded; requests: what was sent for them, every retry and re-ask included; retried: "
            "tries that failed and were sent again, by cause; unusable: answers that could not be read, paid and "
            "asked again (their cost); transient: calls that ended in a failure worth asking again later; reused: "
            "labels a run took from the ledger (the cache) instead of paying for a call; accuracy: answers that "
            "agree with a person's or the gold label (how many were judged); a committee's or cascade's own row "
            "holds its verdicts, which cost nothing beyond its members' calls")
    return Group(table, note)


def _retried(retries: dict[str, int]) -> str:
    return ", ".join(f"{cause} {n}" for cause, n in retries.items()) or "-"


def _unusable(n: int, cost: float) -> str:
    return f"{n} ({usd(cost)})" if n else "0"


def teacher_line(result: RunResult, teacher_on_test: float | None) -> Text:
    """The student beside its teacher: on the test split when the teacher's own accuracy there is known, else beside
    the teacher's accuracy on the labels it sold."""
    best = result.best
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


def audit_view(report: AuditReport) -> Group:
    columns = [Col("#", True), Col("document", keep=3), Col("teacher said"), Col("conf", True, keep=5),
               Col("student belief", True, keep=4), Col("student says"), Col("suspicion", True),
               Col("nearest labelled", keep=2), Col("text", keep=6)]
    rows = []
    for rank, s in enumerate(report.suspects, 1):
        near = ", ".join(f"{n.label} {n.similarity:.2f}{'*' if n.source == 'human' else ''}" for n in s.neighbours)
        rows.append([Text(f"{rank}{'!' if s.flagged else ''}"), Text(s.doc_id), Text(s.label),
                     "-" if s.confidence is None else f"{s.confidence:.2f}", f"{s.belief:.2f}", Text(s.student_label),
                     f"{s.suspicion:.2f}", Text(near), Text(" ".join(s.text.split())[:160])])
    table = FittedTable(f"Teacher labels most likely wrong ({report.doubt}, out-of-fold {report.student})", columns,
                        rows)
    return Group(table, Text(
        f"judged {report.judged} teacher labels ({report.trusted} human labels trusted beside them): "
        f"{report.flagged} flagged as likely wrong (!). * marks a human-labelled neighbour.\n"
        "Send them to people first (or use the Triage tab's suspect order, key o):"))


def plan_view(plan: Plan) -> Group:
    est = plan.labels
    check = f" + {plan.n_check} check sample" if plan.n_check else ""
    rows = [[f"labels ({plan.n_train} training + {plan.n_val} validation{check})", f"{est.n_docs:,}",
             f"{est.tokens_in_per_doc:,.0f}", f"{est.tokens_out_per_doc:,.0f}", f"${est.usd_per_doc:.6f}",
             usd(est.usd), usd(est.bound_usd)]]
    if plan.generation is not None:
        g = plan.generation
        rows.append(["PGKD generation", f"{g.n_docs:,}", f"{g.tokens_in_per_doc:,.0f}", f"{g.tokens_out_per_doc:,.0f}",
                     f"${g.usd_per_doc:.6f}", usd(g.usd), usd(g.bound_usd)])
    table = FittedTable(f"Plan for teacher {plan.teacher}: nothing was sent",
                        [Col("what"), *(Col(c, True) for c in ("requests", "prompt tokens each", "answer tokens each",
                                                               "USD each", "USD estimate", "USD at most"))],
                        rows, total=["total", "", "", "", "", usd(plan.usd), usd(plan.bound_usd)])
    notes: list = [f"price: {est.price_source}",
                   Text(f"the teacher cannot start: {plan.not_ready}", "bold red") if plan.not_ready else
                   f"the teacher is ready: {plan.access} (checked without a call)",
                   "the estimate: prompts like the sampled ones, answers as long as the longest label; at most: what "
                   "the USD cap reserves, the worst case (every prompt byte billed as a token, every answer at "
                   "max_tokens, every unusable answer asked again, the longest document in the project); answers "
                   "already in the ledger are reused for free, and a run stops at its budget"]
    if not est.priced:
        notes.insert(0, Text("the price is unknown: give --price-in and --price-out to plan a USD budget",
                             "bold red"))
    return Group(table, *notes, *prompt_lines(plan.prompt))


PROMPT_SHOWN = 1200  # characters of each message that the plan shows


def prompt_lines(messages: list[dict[str, str]]) -> list[Text]:
    """The messages one sampled document would be sent, each cut to PROMPT_SHOWN characters: shown as data."""
    if not messages:
        return []
    lines = [Text("the prompt of one sampled document:", "bold")]
    for message in messages:
        content = str(message.get("content", ""))
        cut = f"... ({len(content) - PROMPT_SHOWN} more characters)" if len(content) > PROMPT_SHOWN else ""
        lines.append(Text.assemble((f"[{message.get('role', '?')}] ", "dim"), content[:PROMPT_SHOWN] + cut))
    return lines


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
        table = FittedTable("Deferral on the test split: predictions below the threshold go to the LLM",
                            [Col("threshold", True), Col("answered here", True), Col("accuracy on those", True)],
                            [[f"{p.threshold:.2f}", f"{p.coverage:.1%}", _num(p.accuracy)] for p in report.cascade])
        parts.append(table)
    return Group(*parts)


def cascade_view(report: CascadeReport) -> Group:
    table = FittedTable(f"Cascade on {report.n_test} test documents",
                        [Col("tier"), Col("encoder"), Col("answered", True), Col("accuracy there", True)],
                        [[Text(t.name), Text(t.encoder), f"{t.share:.1%}", _num(t.accuracy)] for t in report.tiers])
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
    table = FittedTable(f"Teacher against people: {report.agreed}/{report.n} agreed, accuracy {report.accuracy:.3f}",
                        [Col("label (people's)"), Col("documents", True), Col("teacher agreed", True),
                         Col("accuracy", True)],
                        [[Text(label), str(n), str(ok), f"{ok / n:.3f}"]
                         for label, (n, ok) in report.per_class.items()])
    parts: list = [table]
    if report.confusions:
        parts.append("most common mistakes: " + "; ".join(f"teacher {t} where people said {h} ({n})"
                                                          for t, h, n in report.confusions[:5]))
    return Group(*parts)


# -- the check sample ---------------------------------------------------------------------------------------------


def check_sample_line(sample: dict[str, int]) -> str:
    return (f"Check sample: {sample['size']} documents drawn at random, never trained on or selected; "
            f"{sample['checked']} with a reference label ({sample['by_people']} by people, {sample['by_gold']} gold)")


def estimate_cells(e: Estimate) -> list[str]:
    borrowed = f", borrowing answers on {e.n_proxy} unchecked documents" if e.n_proxy else ""
    return [f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]", f"{e.n} {e.truth} labels: {e.method}{borrowed}"]


def check_view(report: CheckReport) -> Group:
    """`kdstudio check`: the sample, the student's accuracy and macro F1 and its teacher's accuracy, each with its 95%
    interval and the truth it rests on; or what is missing before there can be a figure."""
    parts: list = [check_sample_line(report.truth.counts(report.size))]
    g = report.grades
    if g is None:
        if report.needed:
            parts.append(f"Label {report.needed} more of its documents (Triage's check order, or `kdstudio review "
                         "push --filter check`) for an estimate with its interval.")
        else:
            parts.append("No kept student to grade yet: run `kdstudio distill`.")
        return Group(*parts)
    student = report.student or {}
    rows = [["student accuracy", *estimate_cells(g.student_accuracy)]]
    if g.student_ppi is not None:
        rows.append(["student accuracy (PPI)", *estimate_cells(g.student_ppi)])
    rows.append(["student macro F1", *estimate_cells(g.student_macro_f1)])
    if g.teacher_accuracy is not None:
        rows.append([f"teacher accuracy ({report.teacher})", *estimate_cells(g.teacher_accuracy)])
    parts.append(FittedTable(f"Student {student.get('id')} (run {student.get('run_id')}, round {student.get('round')}) "
                             f"graded on the check sample; a guess gets {g.baseline:.3f}",
                             [Col("figure"), Col("estimate", True), Col("95% interval", True), Col("rests on")],
                             [[Text(c) for c in row] for row in rows]))
    parts += missing_grades(g, student.get("run_id"))
    return Group(*parts)


def missing_grades(g: Grades, run_id: Any) -> list[str]:
    """Why a row of `kdstudio check` is absent, so that a missing figure never reads as a figure no one thought of."""
    said = []
    if g.student_ppi is None:
        said.append(f"No PPI estimate: it is given from {PPI_MIN_CHECKED} checked documents ({PPI_MIN_CHECKED - g.n} "
                    "more); with fewer its interval held the truth too rarely" if g.n < PPI_MIN_CHECKED else
                    "No PPI estimate: no answer on the unchecked documents varied, so there was nothing to borrow")
    if g.teacher_accuracy is None:
        said.append(f"No teacher accuracy: run {run_id}'s teacher answered {g.teacher_judged} of the {g.n} checked "
                    f"documents ({MIN_CHECKED} needed). A run asks its teacher about the checked documents when it "
                    "starts, so those drawn or labelled since are graded by the next run")
    return said
