"""`kdstudio tui -p DIR`: dashboard, corpus, triage, distill, review and export, as tabs over one Project."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from kdstudio.errors import KdError
from kdstudio.project import Project
from kdstudio.tui.panes import Corpus, Dashboard, Distill, Export, Pane, Review, Triage

TABS = [("dashboard", "Dashboard", Dashboard), ("corpus", "Corpus", Corpus), ("triage", "Triage", Triage),
        ("distill", "Distill", Distill), ("review", "Review", Review), ("export", "Export", Export)]

HELP = """[b]kdstudio[/b] — keys

F2 Dashboard   F3 Corpus   F4 Triage   F5 Distill   F6 Review   F7 Export
F1 or ?  this help        q  quit (a running distillation is cancelled, resumable)

[b]Corpus[/b]   type in the boxes and press Enter to filter; n / p next / previous page
[b]Triage[/b]   1-9 (then letters) assign that label   Enter accept the teacher's label
         s skip   u undo the last label   o switch the order (uncertainty / disagreement / suspect)
         every key is saved at once as a human label
[b]Distill[/b]  pick teacher, selector, student and budgets; Start, Cancel (resumable), Resume
[b]Review[/b]   Label Studio push / pull / report (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)
[b]Export[/b]   pick a student, export ONNX (int8 optional); the model card is shown

The mouse works too, and is never needed.  Press Esc to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [("escape", "app.pop_screen", "close"), ("q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")


class KdStudioApp(App[None]):
    TITLE = "kdstudio"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "help"), Binding("question_mark", "help", "help", show=False),
        *[Binding(f"f{i + 2}", f"show('{tab}')", title, show=i < 4) for i, (tab, title, _) in enumerate(TABS)],
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, project: Project, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.sub_title = f"{project.config.name} ({Path(project.directory).resolve().name})"

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            for tab, title, pane in TABS:
                with TabPane(title, id=tab):
                    yield pane(id=f"{tab}-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_pane("dashboard")

    def busy(self) -> bool:
        """A distillation or an export is running in a worker thread, writing through its own cursor. Reading goes
        on meanwhile; actions that write wait until it ends (see `refuse_while_busy`)."""
        return any(worker.is_running for worker in self.workers)

    def refuse_while_busy(self, what: str) -> bool:
        """True (and a notice) when `what` would write while a worker writes."""
        if not self.busy():
            return False
        self.notify(f"a run is writing to the project: {what} waits until it ends", severity="warning")
        return True

    def refresh_pane(self, tab: str) -> None:
        try:
            self.query_one(f"#{tab}-pane", Pane).refresh_data()
        except KdError as exc:  # e.g. the student being replaced by the run at this very moment
            self.notify(exc.message, severity="error")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self.refresh_pane(event.pane.id)

    def action_show(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        distill = self.query_one("#distill-pane", Distill)
        if distill.running:
            distill.stop_requested = True  # the loop stops at its next step; the run stays resumable
        self.exit()


def run(directory: Path) -> None:
    with Project.open(directory) as project:
        KdStudioApp(project).run()
