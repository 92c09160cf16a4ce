"""The Export tab: pick a kept student, export it (F8), watch each step, read the model card it wrote."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Markdown, Select

from kdstudio.errors import KdError
from kdstudio.tui.pane import Pane, verbatim


class Export(Pane):
    TAB_KEYS: ClassVar[dict[str, str]] = {"f8": "export"}

    def compose(self) -> ComposeResult:
        with Horizontal(id="export-form"):
            yield Select([], prompt="student", id="student-choice")
            yield Input("model", placeholder="output folder", id="out")
            yield Checkbox("int8", id="int8")
            yield Button("Export (F8)", id="do-export", variant="primary")
        with Vertical(id="export-card"):
            yield Markdown("Pick a student and export it (F8): each step shows here, then the model card.", id="card")

    def refresh_data(self) -> None:
        students = self.project.students()
        options = [(f"#{s['id']} run {s['run_id']}.{s['round']} {s['kind']} "
                    f"{s['metrics'].get('test', {}).get('accuracy', float('nan')):.3f}", s["id"]) for s in students]
        select = self.query_one("#student-choice", Select)
        select.set_options(options)
        if options:
            select.value = options[-1][1]

    @on(Button.Pressed, "#do-export")
    def action_export(self) -> None:
        choice = self.query_one("#student-choice", Select).value
        if choice is Select.NULL:
            self.app.notify("no student to export yet: distill first", severity="warning")
            return
        if self.app.refuse_while_busy("export"):  # type: ignore[attr-defined]
            return
        # A relative folder is inside the project, wherever the TUI was started from.
        out = self.project.directory / (self.query_one("#out", Input).value.strip() or "model")
        self.query_one("#card", Markdown).update("**Exporting**\n")
        self._run(int(choice), str(out), self.query_one("#int8", Checkbox).value)

    @work(thread=True, exclusive=True)
    def _run(self, student_id: int, out: str, int8: bool) -> None:
        steps: list[str] = []
        started = time.monotonic()

        def on_step(step: str) -> None:
            steps.append(f"{len(steps) + 1}. {step} ({time.monotonic() - started:.0f} s)")
            self.app.call_from_thread(self.query_one("#card", Markdown).update,
                                      "**Exporting**\n\n" + "\n".join(steps))

        try:
            with self.project.for_worker() as project:
                report = project.export(out, student_id=student_id, quantize="int8" if int8 else None,
                                        on_step=on_step)
            card = report.card.read_text(encoding="utf-8")
            if card.startswith("---\n"):  # the Hugging Face metadata: for the Hub, not for reading here
                card = card.split("\n---\n", 1)[-1]
            text = (f"**Exported** in {time.monotonic() - started:.0f} s to\n\n{verbatim(str(report.model.directory))}"
                    "\n\n" + "\n".join(steps) + "\n\n---\n\n" + card)
        except KdError as exc:
            text = "**Error:**\n\n" + verbatim(exc.message + (f"\nFix: {exc.fix}" if exc.fix else ""))
        except Exception as exc:  # the app must stay up; the message says what went wrong
            text = "**Export failed:**\n\n" + verbatim(f"{type(exc).__name__}: {exc}")
        self.app.call_from_thread(self.query_one("#card", Markdown).update, text)
