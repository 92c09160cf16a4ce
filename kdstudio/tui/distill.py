"""The Distill tab: a run's settings, Start / Resume / Cancel (F8 / F9 / F10, from anywhere on the tab), and its round
lines as they come."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, RichLog, Select

from kdstudio.errors import KdError
from kdstudio.project import Project
from kdstudio.terminal import shown
from kdstudio.tui.pane import Pane, data_log, text_of
from kdstudio.types import TEACHER_SHORTCUTS, DistillConfig, Event, RoundDone, RunStarted, TeacherChecked, settings_of


class Distill(Pane):
    TAB_KEYS: ClassVar[dict[str, str]] = {"f8": "start", "f9": "resume", "f10": "cancel"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stop_requested = False
        self.running = False
        self.confirmed: DistillConfig | None = None  # a paid run's settings whose plan was shown

    def compose(self) -> ComposeResult:
        """The form: every run setting declared with a form label (kdstudio.loop.DistillConfig), and the LLM teacher's
        shortcuts, each showing the value a run would take now (defaults under the project's [distill] table)."""
        project: Project = self.app.project  # type: ignore[attr-defined]
        defaults = project.distill_config()
        declared = [x for x in settings_of(DistillConfig).values() if x.spec.form]
        with Horizontal(classes="form-row"):
            for field in (x for x in declared if x.spec.plugin or x.spec.choices):
                with Vertical(classes="field"):
                    yield Label(field.spec.form or field.name)
                    names = list(field.spec.choices) or sorted(project.plugins.registered(field.spec.plugin or ""))
                    yield Select([(Text(shown(x)), x) for x in names], value=getattr(defaults, field.name),
                                 allow_blank=False, id=field.name)
        with Horizontal(classes="form-row"):
            for field in (x for x in declared if not (x.spec.plugin or x.spec.choices)):
                with Vertical(classes="field narrow"):
                    yield Label(field.spec.form or field.name)
                    yield Input(text_of(getattr(defaults, field.name)), id=field.name,
                                type="integer" if field.type is int else "number")
        with Horizontal(classes="form-row"):
            for shortcut in (x for x in TEACHER_SHORTCUTS if x.form):
                with Vertical(classes="field wide"):
                    yield Label(shortcut.form or shortcut.option)
                    yield Input(text_of(defaults.teacher_options.get(shortcut.option)), id=shortcut.option)
        with Horizontal(classes="buttons"):
            yield Button("Start (F8)", id="start", variant="primary")
            yield Button("Resume (F9)", id="resume")
            yield Button("Cancel (F10)", id="cancel", variant="error", disabled=True)
        yield data_log("distill-log")

    def _config(self) -> DistillConfig:
        """The form's values, each parsed and checked by its setting's declaration, over the project's defaults."""
        flags: dict[str, Any] = {}
        for field in (x for x in settings_of(DistillConfig).values() if x.spec.form):
            if field.spec.plugin or field.spec.choices:
                flags[field.name] = str(self.query_one(f"#{field.name}", Select).value)
            else:
                flags[field.name] = field.parse(self.query_one(f"#{field.name}", Input).value)
        shortcuts = {x.option: self.query_one(f"#{x.option}", Input).value.strip() for x in TEACHER_SHORTCUTS
                     if x.form}
        if flags["teacher"] == "llm":
            base = self.project.distill_config().teacher_options
            flags["teacher_options"] = {**base, **{k: v for k, v in shortcuts.items() if v}}
        return self.project.distill_config(flags)

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        if self.running:
            return
        log = self.query_one("#distill-log", RichLog)
        try:
            config = self._config()
            config.validate()
            if config != self.confirmed and not self._free(config, log):
                self.confirmed = config  # the same settings, started again, are the confirmation
                return
        except (KdError, ValueError) as exc:
            log.write(Text(str(getattr(exc, "message", exc)), "red"))
            return
        self.confirmed = None
        self._launch(config, None)

    def _free(self, config: DistillConfig, log: RichLog) -> bool:
        """True for a teacher that costs nothing; for one that may, its plan is shown and the run waits for a second
        F8, as the command line asks before a paid run."""
        from kdstudio.render import plan_view

        planned = self.project.plan(config)
        if planned.usd == 0 and planned.labels.priced:
            return True
        if planned.not_ready:
            raise KdError(f"the teacher cannot start: {planned.not_ready}")
        log.write(plan_view(planned))
        log.write(Text("this run may cost money: press F8 (Start) again to start it and pay", "bold yellow"))
        return False

    @on(Button.Pressed, "#resume")
    def action_resume(self) -> None:
        if self.running:
            return
        latest = self.project.latest_run()
        if latest is None:
            self.app.notify("there is no run to resume", severity="warning")
            return
        self._launch(None, latest.id)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if self.running:
            self.stop_requested = True
            self.query_one("#distill-log", RichLog).write("cancelling after the answers in flight…")

    def _launch(self, config: Any, resume: int | None) -> None:
        self.running = True
        self.stop_requested = False
        self._buttons(running=True)
        self._run(config, resume)

    def _buttons(self, running: bool) -> None:
        self.query_one("#cancel", Button).disabled = not running
        self.query_one("#start", Button).disabled = running
        self.query_one("#resume", Button).disabled = running

    @work(thread=True, exclusive=True)
    def _run(self, config: Any, resume: int | None) -> None:
        from kdstudio.render import budget_line, kept_warning, round_line, teacher_check_lines

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
            if warned := result.best and kept_warning(result.best.metrics):
                message.append(f"\nwarning: {warned}", "yellow")
        except KdError as exc:
            message = Text(exc.message, "red")
        except Exception as exc:  # the run is marked failed and resumable; the app must stay up
            message = Text(f"{type(exc).__name__}: {exc}", "red")
        self.app.call_from_thread(self._finished, message)

    def _finished(self, message: Text) -> None:
        self.running = False
        self.query_one("#distill-log", RichLog).write(message)
        self._buttons(running=False)
