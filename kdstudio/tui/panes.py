"""The app's panes. Each reads and writes through the Project façade only."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Markdown, RichLog, Select, Static
from textual_plotext import PlotextPlot

from kdstudio.errors import KdError
from kdstudio.money import usd
from kdstudio.project import Project
from kdstudio.types import DistillConfig, Event, Filters, RoundDone, RunStarted, TeacherChecked

# Keys that assign labels in triage: digits, then letters other than the triage commands (s, u, o).
LABEL_KEYS = [*"123456789", *"abcdefghijklmnpqrtvwxyz"]


class Pane(Widget):
    """A tab's content; `refresh_data` reloads it from the project when the tab is shown."""

    DEFAULT_CSS = "Pane { height: 1fr; }"

    @property
    def project(self) -> Project:
        return self.app.project  # type: ignore[attr-defined]

    def refresh_data(self) -> None:
        pass


class Dashboard(Pane):
    def compose(self) -> ComposeResult:
        yield Static(id="dashboard-stats")
        yield PlotextPlot(id="curve")

    def refresh_data(self) -> None:
        status = self.project.status()
        docs = ", ".join(f"{split}/{source} {n}" for split, source, n in status.documents) or "none"
        labels = ", ".join(f"{label} {n}" for label, n in status.label_distribution) or "none yet"
        by_source = ", ".join(f"{source} {n}" for source, n in status.labels_by_source) or "none yet"
        self.query_one("#dashboard-stats", Static).update(Text.assemble(
            (status.name, "bold"), f"  {status.total_documents} documents: {docs}\n"
            f"labels: {labels}  (by source: {by_source})\n"
            f"spent {usd(status.spend_usd)} on {status.teacher_calls} teacher calls ({status.teacher_errors} failed);"
            f" {len(status.runs)} runs"))
        plot = self.query_one("#curve", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        run = status.runs[-1] if status.runs else None
        rounds = [r for r in self.project.rounds(run.id) if r.phase == "done"] if run else []
        if rounds:
            x = [r.n_labels or 0 for r in rounds]
            for split in ("test", "val"):
                y = [r.metrics.get(split, {}).get("accuracy") for r in rounds]
                if all(v is not None for v in y):
                    plt.plot(x, y, label=f"{split} accuracy", marker="dot")
            plt.title(f"run {run.id}: {run.config.get('selector')} / {run.config.get('student')} / "
                      f"{run.config.get('teacher')}{' (SIMULATED)' if run.simulated else ''}")
            plt.xlabel("labels")
        else:
            plt.title("no run yet: start one in Distill (F5)")
        plot.refresh()


class Corpus(Pane):
    PAGE = 50
    # n / p rather than PgDn / PgUp, which the table keeps for its cursor.
    BINDINGS: ClassVar[list[BindingType]] = [("n", "page(1)", "next page"), ("p", "page(-1)", "previous page")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_row = 0
        self.total = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="corpus-filters"):
            yield Input(placeholder="search text", id="search")
            yield Select([(Text(x), x) for x in self.app.project.labels], prompt="label", id="label")  # type: ignore
            yield Select([("teacher", "teacher"), ("human", "human"), ("unlabelled", "none")], prompt="source",
                         id="source")
            yield Select([(x, x) for x in ("pool", "val", "test")], prompt="split", id="split")
            yield Input(placeholder="conf ≥", id="min-conf")
            yield Input(placeholder="conf ≤", id="max-conf")
        yield Label("", id="corpus-status")
        yield DataTable(id="corpus-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="corpus-detail", markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "split", "label", "by", "conf", "gold", "text")

    def refresh_data(self) -> None:
        self.load()
        self.query_one(DataTable).focus()  # keys page the table; click a box to filter

    def filters(self) -> Filters:
        def number(widget_id: str) -> float | None:
            raw = self.query_one(widget_id, Input).value.strip()
            try:
                return float(raw) if raw else None
            except ValueError:
                return None

        def chosen(widget_id: str) -> str | None:
            value = self.query_one(widget_id, Select).value
            return None if value is Select.NULL else str(value)

        return Filters(search=self.query_one("#search", Input).value.strip() or None, label=chosen("#label"),
                       label_source=chosen("#source"), split=chosen("#split"), min_confidence=number("#min-conf"),
                       max_confidence=number("#max-conf"))

    def load(self) -> None:
        page = self.project.documents(self.filters(), offset=self.first_row, size=self.PAGE)
        self.total = page.total
        table = self.query_one(DataTable)
        table.clear()
        for row in page.rows:
            conf = "" if row.confidence is None else f"{row.confidence:.2f}"
            # Text cells: a plain string in a DataTable is parsed as markup, and these are data.
            cells = (row.id, row.split, row.label or "", row.label_source or "", conf, row.gold or "",
                     " ".join(row.text.split())[:80])
            table.add_row(*map(Text, cells), key=row.id)
        last = min(self.first_row + self.PAGE, page.total)
        self.query_one("#corpus-status", Label).update(
            f"{self.first_row + 1 if page.total else 0}-{last} of {page.total} documents  "
            "(n / p: next / previous page)")

    @on(Input.Submitted)
    @on(Select.Changed)
    def _filter_changed(self) -> None:
        self.first_row = 0
        self.load()

    def action_page(self, step: int) -> None:
        offset = self.first_row + step * self.PAGE
        if 0 <= offset < max(self.total, 1):
            self.first_row = offset
            self.load()

    @on(DataTable.RowHighlighted)
    def _show(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            text = self.project.document_text(str(event.row_key.value)) or ""
            self.query_one("#corpus-detail", Static).update(text[:2000])


TRIAGE_ORDERS = ("uncertainty", "disagreement", "suspect")


class Triage(Pane):
    """One document at a time: a key assigns a label, Enter accepts the teacher's, s skips, u undoes."""

    can_focus = True
    BINDINGS: ClassVar[list[BindingType]] = [("enter", "accept", "accept teacher"), ("s", "skip", "skip"),
                                             ("u", "undo", "undo"), ("o", "order", "order")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue: list[Any] = []
        self.at = 0
        self.order = "uncertainty"
        self.history: list[tuple[int, int | None]] = []  # (position, label id or None for a skip)
        self.keys: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Label("", id="triage-info", markup=False)
        yield Static("", id="triage-text", markup=False)
        yield Static("", id="triage-keys", markup=False)

    def refresh_data(self) -> None:
        self.keys = dict(zip(LABEL_KEYS, self.project.labels, strict=False))
        self.queue = self.project.triage_queue(self.order)
        self.at = 0
        self.history.clear()
        self.show()
        self.focus()

    def show(self) -> None:
        legend = Text("  ").join(Text.assemble((k, "bold"), f" {label}") for k, label in self.keys.items())
        self.query_one("#triage-keys", Static).update(Text.assemble(
            legend, "\n", ("Enter", "bold"), " accept teacher  ", ("s", "bold"), " skip  ", ("u", "bold"), " undo  ",
            ("o", "bold"), f" order: {self.order}"))
        info = self.query_one("#triage-info", Label)
        if self.at >= len(self.queue):
            info.update(f"nothing left to triage ({len(self.queue)} in the queue, order {self.order})")
            self.query_one("#triage-text", Static).update("")
            return
        item = self.queue[self.at]
        conf = "?" if item.confidence is None else f"{item.confidence:.2f}"
        student = item.student_label or "no student yet"
        info.update(Text.assemble(f"{self.at + 1}/{len(self.queue)}  ", (item.doc_id, "bold"), "  teacher: ",
                                  (item.teacher_label, "bold"), f" ({conf})  student: ", (student, "bold")))
        self.query_one("#triage-text", Static).update(item.text)

    def _assign(self, label: str) -> None:
        if self.at >= len(self.queue) or self.app.refuse_while_busy("labelling"):  # type: ignore[attr-defined]
            return
        label_id = self.project.set_label(self.queue[self.at].doc_id, label, annotator="tui")
        self.history.append((self.at, label_id))
        self.at += 1
        self.show()

    def on_key(self, event: Any) -> None:
        if event.key in self.keys:
            event.stop()
            self._assign(self.keys[event.key])

    def action_accept(self) -> None:
        if self.at < len(self.queue):
            self._assign(self.queue[self.at].teacher_label)

    def action_skip(self) -> None:
        if self.at < len(self.queue):
            self.history.append((self.at, None))
            self.at += 1
            self.show()

    def action_undo(self) -> None:
        if self.history and not (self.history[-1][1] is not None
                                 and self.app.refuse_while_busy("undoing a label")):  # type: ignore[attr-defined]
            position, label_id = self.history.pop()
            if label_id is not None:
                self.project.undo_label(label_id)
            self.at = position
            self.show()

    def action_order(self) -> None:
        """The next order that works: one that cannot be had yet (no student, too few labels to audit) says why and
        is passed over."""
        start = self.order
        for _ in range(len(TRIAGE_ORDERS) - 1):
            self.order = TRIAGE_ORDERS[(TRIAGE_ORDERS.index(self.order) + 1) % len(TRIAGE_ORDERS)]
            try:
                self.refresh_data()
                return
            except KdError as exc:
                self.app.notify(f"order {self.order}: {exc.message}", severity="error")
        self.order = start
        self.refresh_data()


class Distill(Pane):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stop_requested = False
        self.running = False

    def compose(self) -> ComposeResult:
        project: Project = self.app.project  # type: ignore[attr-defined]
        names = {kind: sorted(project.plugins.registered(kind)) for kind in ("teacher", "selector", "student")}
        defaults = project.distill_config()  # DistillConfig's defaults under the project's [distill] table
        with Horizontal(id="distill-form"):
            for kind in ("teacher", "selector", "student"):
                yield Select([(x, x) for x in names[kind]], value=getattr(defaults, kind), allow_blank=False, id=kind)
            yield Input(_text(defaults.budget_labels), placeholder="label budget", id="budget", type="integer")
            yield Input(_text(defaults.batch), placeholder="batch", id="batch", type="integer")
            yield Input(_text(defaults.budget_usd), placeholder="max USD", id="usd", type="number")
        yield Input(placeholder="LLM model for teacher llm, e.g. openai/gpt-4o-mini (key from the environment)",
                    id="model")
        with Horizontal():
            yield Button("Start", id="start", variant="primary")
            yield Button("Resume", id="resume")
            yield Button("Cancel", id="cancel", variant="error", disabled=True)
        yield RichLog(id="distill-log", wrap=True)  # no markup: run lines carry provider errors and labels

    def _config(self) -> DistillConfig:
        form = {key: self.query_one(f"#{key}", Input).value.strip() for key in ("model", "usd", "budget", "batch")}
        flags: dict[str, Any] = {kind: str(self.query_one(f"#{kind}", Select).value)
                                 for kind in ("teacher", "selector", "student")}
        if flags["teacher"] == "llm" and form["model"]:
            flags["teacher_options"] = {"model": form["model"]}
        flags["budget_usd"] = float(form["usd"]) if form["usd"] else None
        for key, setting in (("budget", "budget_labels"), ("batch", "batch")):
            if form[key]:
                flags[setting] = int(form[key])
        return self.project.distill_config(flags)

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        try:
            config = self._config()
            config.validate()
        except (KdError, ValueError) as exc:
            self.query_one("#distill-log", RichLog).write(Text(str(getattr(exc, "message", exc)), "red"))
            return
        self._launch(config, None)

    @on(Button.Pressed, "#resume")
    def _resume(self) -> None:
        latest = self.project.latest_run()
        if latest is None:
            self.app.notify("there is no run to resume", severity="warning")
            return
        self._launch(None, latest.id)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.stop_requested = True
        self.query_one("#distill-log", RichLog).write("cancelling after the answers in flight…")

    def _launch(self, config: Any, resume: int | None) -> None:
        if self.running:
            return
        self.running = True
        self.stop_requested = False
        self.query_one("#cancel", Button).disabled = False
        self.query_one("#start", Button).disabled = True
        self.query_one("#resume", Button).disabled = True
        self._run(config, resume)

    @work(thread=True, exclusive=True)
    def _run(self, config: Any, resume: int | None) -> None:
        from kdstudio.render import budget_line, round_line, teacher_check_lines

        log = self.query_one("#distill-log", RichLog)

        def on_event(event: Event) -> None:
            if isinstance(event, RunStarted):
                line: Text | str = Text.assemble((f"run {event.run_id}", "bold"),
                                                 f" teacher {event.teacher}\n{budget_line(event)}")
            elif isinstance(event, RoundDone):
                line = round_line(event.report)
            elif isinstance(event, TeacherChecked):
                agreement, warnings = teacher_check_lines(event)
                line = Text("\n").join([*agreement, *warnings])
            else:
                return
            self.app.call_from_thread(log.write, line)

        try:
            with self.project.for_worker() as project:
                result = project.distill(config, resume=resume, on_event=on_event,
                                         should_stop=lambda: self.stop_requested)
            message = Text.assemble((f"run {result.run_id} {result.status}", "bold"), f": {result.stop_reason}")
        except KdError as exc:
            message = Text(exc.message, "red")
        except Exception as exc:  # the run is marked failed and resumable; the app must stay up
            message = Text(f"{type(exc).__name__}: {exc}", "red")
        self.app.call_from_thread(self._finished, message)

    def _finished(self, message: Text) -> None:
        self.running = False
        self.query_one("#distill-log", RichLog).write(message)
        self.query_one("#cancel", Button).disabled = True
        self.query_one("#start", Button).disabled = False
        self.query_one("#resume", Button).disabled = False


class Review(Pane):
    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Button("Push low-confidence", id="push")
            yield Button("Pull", id="pull")
            yield Button("Report", id="report")
        yield RichLog(id="review-log", wrap=True)  # no markup: server answers and labels are data

    @on(Button.Pressed)
    def _act(self, event: Button.Pressed) -> None:
        log = self.query_one("#review-log", RichLog)
        if event.button.id in ("push", "pull") and self.app.refuse_while_busy(  # type: ignore[attr-defined]
                f"review {event.button.id}"):
            return
        try:
            if event.button.id == "push":
                r = self.project.review_push()
                log.write(f"pushed {r.sent} teacher labels to {r.location} (project {r.project_ref}); "
                          f"{r.already_there} were there already")
            elif event.button.id == "pull":
                r = self.project.review_pull()
                log.write(f"pulled {r.found} human labels: {r.added} new or updated, {r.ignored} ignored")
            else:
                a = self.project.review_report()
                rate = "-" if a.accuracy is None else f"{a.accuracy:.3f}"
                per_class = ", ".join(f"{x} {ok}/{n}" for x, (n, ok) in a.per_class.items())
                log.write(f"teacher agreed with people on {a.agreed}/{a.n} ({rate}); {per_class}")
        except KdError as exc:
            log.write(Text(exc.message, "red") + Text(f"\n{exc.fix}" if exc.fix else ""))


class Export(Pane):
    def compose(self) -> ComposeResult:
        with Horizontal(id="export-form"):
            yield Select([], prompt="student", id="student-choice")
            yield Input("model", placeholder="output folder", id="out")
            yield Checkbox("int8", id="int8")
            yield Button("Export", id="do-export", variant="primary")
        with Vertical(id="export-card"):
            yield Markdown("Pick a student and export it: the model card appears here.", id="card")

    def refresh_data(self) -> None:
        students = self.project.students()
        options = [(f"#{s['id']} run {s['run_id']}.{s['round']} {s['kind']} "
                    f"{s['metrics'].get('test', {}).get('accuracy', float('nan')):.3f}", s["id"]) for s in students]
        select = self.query_one("#student-choice", Select)
        select.set_options(options)
        if options:
            select.value = options[-1][1]

    @on(Button.Pressed, "#do-export")
    def _export(self) -> None:
        choice = self.query_one("#student-choice", Select).value
        if choice is Select.NULL:
            self.app.notify("no student to export yet: distill first", severity="warning")
            return
        if self.app.refuse_while_busy("export"):  # type: ignore[attr-defined]
            return
        self.query_one("#card", Markdown).update("exporting…")
        # A relative folder is inside the project, wherever the TUI was started from.
        out = self.project.directory / (self.query_one("#out", Input).value.strip() or "model")
        self._run(int(choice), str(out), self.query_one("#int8", Checkbox).value)

    @work(thread=True, exclusive=True)
    def _run(self, student_id: int, out: str, int8: bool) -> None:
        try:
            with self.project.for_worker() as project:
                report = project.export(out, student_id=student_id, quantize="int8" if int8 else None)
            text = report.card.read_text(encoding="utf-8")
        except KdError as exc:
            text = "**Error:**\n\n" + _verbatim(exc.message + (f"\nFix: {exc.fix}" if exc.fix else ""))
        except Exception as exc:  # the app must stay up; the message says what went wrong
            text = "**Export failed:**\n\n" + _verbatim(f"{type(exc).__name__}: {exc}")
        self.app.call_from_thread(self.query_one("#card", Markdown).update, text)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _verbatim(text: str) -> str:
    """Text shown in a Markdown widget exactly as it is: a fenced block longer than any backtick run inside it."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"
