"""The Triage tab: one document at a time, as fast as keys go. Prodigy's a / x / i (accept the teacher's label, reject
it, ignore the document), a key per label, undo; every key is saved at once as a person's label, with their name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from kdstudio.errors import KdError
from kdstudio.terminal import shown
from kdstudio.tui.pane import Pane

ORDERS = ("uncertainty", "disagreement", "suspect", "check", "diverse")
COMMAND_KEYS = set("axisuoq")  # triage commands and quit: never a label's key
LABEL_KEYS = [*"123456789", *(c for c in "bcdefghjklmnprtvwyz" if c not in COMMAND_KEYS)]


@dataclass
class Session:
    """What this sitting has done: for the stats line."""

    started: float = field(default_factory=time.monotonic)
    labelled: int = 0
    compared: int = 0  # labels given where the teacher had one
    agreed: int = 0  # of those, the teacher's label

    def add(self, teacher: str | None, label: str, sign: int = 1) -> None:
        self.labelled += sign
        if teacher is not None:
            self.compared += sign
            self.agreed += sign * (teacher == label)

    def line(self, left: int, annotator: str) -> str:
        minutes = max((time.monotonic() - self.started) / 60, 1 / 60)
        agreed = f"teacher agreed {self.agreed}/{self.compared}" if self.compared else "no teacher label judged yet"
        return (f"this session: {self.labelled} labelled, {self.labelled / minutes:.1f}/min, {agreed}; "
                f"{left} left in the queue; labelling as {annotator}")


@dataclass
class Step:
    position: int
    label_id: int | None  # None: the document was ignored (then ignore_id says which record)
    label: str | None = None
    ignore_id: int | None = None


class Triage(Pane):
    can_focus = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "accept", "accept"), Binding("enter", "accept", "accept", show=False),
        Binding("x", "reject", "reject"), Binding("i", "ignore", "ignore"), Binding("s", "ignore", show=False),
        Binding("u", "undo", "undo"), Binding("o", "order", "order"),
        # A long document scrolls under the keys, whatever has the focus.
        Binding("pagedown", "scroll_text('page_down')", show=False),
        Binding("pageup", "scroll_text('page_up')", show=False),
        Binding("down", "scroll_text('down')", show=False), Binding("up", "scroll_text('up')", show=False),
        Binding("home", "scroll_text('home')", show=False), Binding("end", "scroll_text('end')", show=False)]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue: list[Any] = []
        self.at = 0
        self.order = "uncertainty"
        self.history: list[Step] = []
        self.keys: dict[str, str] = {}
        self.session = Session()
        self.rejected = False  # the teacher's label was rejected: the next label key gives the right one
        self.said = ""  # what the last key did, shown until the next one

    def compose(self) -> ComposeResult:
        yield Static("", id="triage-info", markup=False)
        with VerticalScroll(id="triage-scroll", can_focus=False):
            yield Static("", id="triage-text", markup=False)
        yield Static("", id="triage-saved", markup=False)
        yield Static("", id="triage-keys", markup=False)

    def action_scroll_text(self, how: str) -> None:
        getattr(self.query_one("#triage-scroll", VerticalScroll), f"scroll_{how}")(animate=False)

    @property
    def annotator(self) -> str:
        return self.app.annotator  # type: ignore[attr-defined]

    def refresh_data(self) -> None:
        self.keys = dict(zip(LABEL_KEYS, self.project.labels, strict=False))
        self.queue = self.project.triage_queue(self.order)
        if not self.queue and self.order == "uncertainty":
            # Nothing from a teacher to check: a cold start, labelling the pool from scratch, diverse documents first.
            self.order, self.queue = "diverse", self.project.triage_queue("diverse")
            self.said = "no teacher label is waiting: labelling from scratch, diverse documents first" if \
                self.queue else ""
        self.at, self.rejected = 0, False
        self.history.clear()
        self.show()
        self.focus()

    @property
    def current(self) -> Any | None:
        return self.queue[self.at] if self.at < len(self.queue) else None

    def show(self) -> None:
        self._show_keys()
        self.query_one("#triage-saved", Static).update(Text.assemble(
            (self.said + "\n", "green"), (self.session.line(len(self.queue) - self.at, self.annotator), "dim")))
        item, info, text = self.current, self.query_one("#triage-info", Static), self.query_one("#triage-text", Static)
        if item is None:
            info.update(Text(self._empty(), "yellow"))
            text.update("")
            return
        blind = "check sample: label it blind" if self.order == "check" else "unlabelled (from scratch)"
        teacher = Text(blind, "italic") if item.teacher_label is None else Text.assemble(
            (shown(item.teacher_label), "bold strike" if self.rejected else "bold"),
            f" ({'?' if item.confidence is None else f'{item.confidence:.2f}'})")
        info.update(Text.assemble(
            f"{self.at + 1}/{len(self.queue)} ", (shown(item.doc_id), "bold"), " teacher: ", teacher,
            " student: ", (shown(item.student_label or ("hidden" if self.order == "check" else "none yet")), "bold"),
            f"  [{self.order}]"))
        text.update(shown(item.text))
        self.query_one("#triage-scroll", VerticalScroll).scroll_home(animate=False)

    def _show_keys(self) -> None:
        legend = Text("  ").join(Text.assemble((k, "bold"), f" {shown(label)}") for k, label in self.keys.items())
        if self.rejected:
            prompt = Text("rejected: which label is right? Press its key (above), or i to ignore, u to undo",
                          "bold yellow")
            self.query_one("#triage-keys", Static).update(Text.assemble(legend, "\n", prompt))
            return
        commands = [("a", "accept"), ("x", "reject"), ("i", "ignore"), ("u", "undo"), ("o", "order"),
                    ("PgDn", "scroll")]
        self.query_one("#triage-keys", Static).update(Text.assemble(
            legend, "\n", *[part for key, what in commands for part in ((key, "bold"), f" {what}  ")]))

    def _empty(self) -> str:
        if self.queue:
            return (f"End of this queue ({len(self.queue)} documents). Press o for another order, or come back to "
                    "this tab (F4) for a fresh queue.")
        if self.order == "check":
            return ("Every document of the check sample has a person's label, or there is none yet (`kdstudio check "
                    "-p DIR --size 100` draws one). `kdstudio check` grades the student on it.")
        if self.order == "diverse":
            return ("Every pool document has a label or was ignored. Import more (kdstudio import), or press o to "
                    "check the teacher's labels in another order.")
        return (f"Nothing to check in the {self.order} order: no teacher label is waiting for a person. Press o "
                "for another order (diverse: label from scratch), or start a run in Distill (F5) to get teacher "
                "labels.")

    def _save(self, label: str) -> None:
        item = self.current
        if item is None or self.app.refuse_while_busy("labelling"):  # type: ignore[attr-defined]
            return
        label_id = self.project.set_label(item.doc_id, label, annotator=self.annotator)
        self.history.append(Step(self.at, label_id, label))
        self.session.add(item.teacher_label, label)
        verdict = "" if item.teacher_label is None else (
            "  (the teacher's label)" if label == item.teacher_label else f"  (the teacher said {item.teacher_label})")
        self.said = shown(f"saved {item.doc_id} = {label}{verdict}, by {self.annotator}")
        self.at, self.rejected = self.at + 1, False
        self.show()

    def on_key(self, event: Any) -> None:
        if event.key in self.keys:
            event.stop()
            label = self.keys[event.key]
            item = self.current
            if self.rejected and item is not None and label == item.teacher_label:
                self.app.notify("that is the label you rejected: pick another, or i to ignore", severity="warning")
                return
            self._save(label)

    def action_accept(self) -> None:
        item = self.current
        if item is None:
            return
        if item.teacher_label is None:
            self.app.notify("no teacher label here to accept: press a label's key", severity="warning")
            return
        self._save(item.teacher_label)

    def action_reject(self) -> None:
        item = self.current
        if item is not None and item.teacher_label is None:
            self.app.notify("no teacher label here to reject: press a label's key", severity="warning")
        elif item is not None:
            self.rejected = True
            self.show()

    def action_ignore(self) -> None:
        item = self.current
        if item is None or self.app.refuse_while_busy("ignoring"):  # type: ignore[attr-defined]
            return
        ignore_id = self.project.ignore_document(item.doc_id, annotator=self.annotator)
        self.history.append(Step(self.at, None, ignore_id=ignore_id))
        self.said = shown(f"ignored {item.doc_id}: recorded (it leaves the queue; u takes it back), no label given")
        self.at, self.rejected = self.at + 1, False
        self.show()

    def action_undo(self) -> None:
        if not self.history or self.app.refuse_while_busy("undoing"):  # type: ignore[attr-defined]
            return
        step = self.history.pop()
        item = self.queue[step.position]
        if step.label_id is not None:
            self.project.undo_label(step.label_id)
            self.session.add(item.teacher_label, step.label or "", sign=-1)
        elif step.ignore_id is not None:
            self.project.undo_ignore(step.ignore_id)
        self.said = shown(f"undone: {item.doc_id} is back{' unlabelled' if step.label_id is not None else ''}")
        self.at, self.rejected = step.position, False
        self.show()

    def action_order(self) -> None:
        """The next order that works: one that cannot be had yet (no student, too few labels to audit) says why and
        is passed over."""
        start = self.order
        for _ in range(len(ORDERS) - 1):
            self.order = ORDERS[(ORDERS.index(self.order) + 1) % len(ORDERS)]
            try:
                self.said = f"order: {self.order}"
                self.refresh_data()
                return
            except KdError as exc:
                self.app.notify(f"order {self.order}: {exc.message}", severity="error")
        self.order = start
        self.refresh_data()
