"""The Review tab: where review stands when it opens; which teacher labels go to Label Studio (filter, threshold,
limit), shown before anything is sent; push (F9) what was shown, pull (F10) people's labels back."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, RichLog, Select

from kdstudio.errors import KdError
from kdstudio.tui.pane import Pane, data_log, text_of

FILTERS = ("low-confidence", "disagreement", "suspect", "all")
SHOWN = 5  # documents of a preview listed by name


class Review(Pane):
    TAB_KEYS: ClassVar[dict[str, str]] = {"f8": "preview", "f9": "push", "f10": "pull"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.previewed: tuple[str, float | None, int | None] | None = None  # the settings the shown list came from
        self.previewed_count = 0

    def compose(self) -> ComposeResult:
        defaults = self.app.project.config.review  # type: ignore[attr-defined]
        with Horizontal(classes="form-row"):
            with Vertical(classes="field"):
                yield Label("which teacher labels")
                yield Select([(x, x) for x in FILTERS], value=defaults.filter, allow_blank=False, id="filter")
            with Vertical(classes="field narrow"):
                yield Label("threshold")
                yield Input(text_of(defaults.below), id="below", type="number")
            with Vertical(classes="field narrow"):
                yield Label("at most")
                yield Input(text_of(defaults.limit), placeholder="all", id="limit", type="integer")
        with Horizontal(classes="buttons"):
            yield Button("Preview (F8)", id="preview", variant="primary")
            yield Button("Push (F9)", id="push", disabled=True)
            yield Button("Pull (F10)", id="pull")
        yield data_log("review-log")

    def refresh_data(self) -> None:
        state = self.project.review_state()
        a = state.agreement
        agreed = (f"the teacher agreed with people on {a.agreed}/{a.n} ({a.accuracy:.3f})" if a.n and a.accuracy
                  is not None else "no teacher label has been checked by a person yet")
        self.query_one("#review-log", RichLog).write(Text.assemble(
            ("review: ", "bold"), f"{state.unchecked} teacher labels unchecked ({state.below} below "
            f"{state.threshold}); {state.human} documents labelled by people; {agreed}"))

    def _settings(self) -> tuple[str, float | None, int | None]:
        below = self.query_one("#below", Input).value.strip()
        limit = self.query_one("#limit", Input).value.strip()
        return (str(self.query_one("#filter", Select).value), float(below) if below else None,
                int(limit) if limit else None)

    @on(Input.Changed)
    @on(Select.Changed)
    def _settings_changed(self) -> None:
        # What will be pushed is what was last shown: a changed setting needs a new preview.
        self.previewed = None
        self.query_one("#push", Button).disabled = True

    @on(Button.Pressed, "#preview")
    def action_preview(self) -> None:
        log = self.query_one("#review-log", RichLog)
        try:
            settings = self._settings()
            items = self.project.review_preview(filter=settings[0], below=settings[1], limit=settings[2])
        except (KdError, ValueError) as exc:
            self._error(exc)
            return
        log.write(Text.assemble((f"{len(items)} teacher labels would be pushed", "bold"),
                                f" ({settings[0]}{f', below {settings[1]}' if settings[0] == 'low-confidence' else ''}"
                                f"{f', at most {settings[2]}' if settings[2] is not None else ''})"))
        for item in items[:SHOWN]:
            conf = "?" if item.confidence is None else f"{item.confidence:.2f}"
            log.write(Text(f"  {item.doc_id}  {item.label} ({conf})  {' '.join(item.text.split())[:60]}"))
        if len(items) > SHOWN:
            log.write(Text(f"  … and {len(items) - SHOWN} more"))
        self.previewed, self.previewed_count = (settings, len(items)) if items else (None, 0)
        self.query_one("#push", Button).disabled = not items
        if items:
            log.write(Text(f"press F9 to push these {len(items)}", "yellow"))

    @on(Button.Pressed, "#push")
    def action_push(self) -> None:
        if self.previewed is None:
            self.app.notify("preview first (F8): nothing is pushed unseen", severity="warning")
            return
        if self.app.refuse_while_busy("review push"):  # type: ignore[attr-defined]
            return
        settings, self.previewed = self.previewed, None
        self.query_one("#push", Button).disabled = True
        try:
            r = self.project.review_push(filter=settings[0], below=settings[1], limit=settings[2])
        except KdError as exc:
            self._error(exc)
            return
        self.query_one("#review-log", RichLog).write(
            f"pushed {r.sent} teacher labels to {r.location} (project {r.project_ref}); {r.already_there} were there "
            "already")

    @on(Button.Pressed, "#pull")
    def action_pull(self) -> None:
        if self.app.refuse_while_busy("review pull"):  # type: ignore[attr-defined]
            return
        try:
            r = self.project.review_pull()
        except KdError as exc:
            self._error(exc)
            return
        self.query_one("#review-log", RichLog).write(
            f"pulled {r.found} human labels: {r.added} new or updated, {r.ignored} ignored")
        self.refresh_data()

    def _error(self, exc: Exception) -> None:
        log = self.query_one("#review-log", RichLog)
        log.write(Text(str(getattr(exc, "message", exc)), "red"))
        if getattr(exc, "fix", None):
            log.write(Text(f"fix: {exc.fix}"))  # type: ignore[attr-defined]
