"""`kdstudio tui -p DIR`: dashboard, corpus, triage, distill, review and export, as tabs over one Project."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from kdstudio.errors import KdError
from kdstudio.project import Project
from kdstudio.tui.corpus import Corpus
from kdstudio.tui.dashboard import Dashboard
from kdstudio.tui.distill import Distill
from kdstudio.tui.export_tab import Export
from kdstudio.tui.pane import Pane
from kdstudio.tui.review import Review
from kdstudio.tui.triage import Triage

TABS = [("dashboard", "Dashboard", Dashboard), ("corpus", "Corpus", Corpus), ("triage", "Triage", Triage),
        ("distill", "Distill", Distill), ("review", "Review", Review), ("export", "Export", Export)]

HELP = """[b]kdstudio[/b] — keys (they work wherever the focus is)

F2 Dashboard  F3 Corpus  F4 Triage  F5 Distill  F6 Review  F7 Export
F1 or ?  this help    q  quit (a running distillation stops, resumable)

[b]Triage[/b]  1-9, then letters: that label   a or Enter: accept the teacher's
        x reject the teacher's, then the right label's key   i ignore
        u undo   o order: uncertainty, disagreement, suspect, diverse
        (diverse: unlabelled documents, for labelling from scratch)
        every key is saved at once, as your label (tui --annotator)
[b]Corpus[/b]  type in a box, Enter filters; n / p next / previous page
[b]Distill[/b] F8 start (a paid run shows its plan: F8 again to pay)
        F9 resume the latest run   F10 cancel (resumable)
[b]Review[/b]  F8 preview what would go to Label Studio, F9 push it,
        F10 pull (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)
[b]Export[/b]  F8 export the chosen student: its steps, then its card

The mouse works too, and is never needed.  Esc closes this."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [("escape", "app.pop_screen", "close"), ("q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):  # scrolls where the terminal is shorter than the text
            yield Static(HELP)


class KdStudioApp(App[None]):
    TITLE = "kdstudio"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "help"), Binding("question_mark", "help", "help", show=False),
        # priority: a tab's key works with the focus in a text box too.
        *[Binding(f"f{i + 2}", f"show('{tab}')", title, show=False, priority=True)
          for i, (tab, title, _) in enumerate(TABS)],
        # A tab's own actions: F8, F9, F10, wherever the focus is on it (see Pane.TAB_KEYS).
        *[Binding(f"f{n}", f"tab_key('f{n}')", show=False, priority=True) for n in (8, 9, 10)],
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, project: Project, annotator: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.annotator = annotator or default_annotator()
        self.sub_title = f"{project.config.name} ({Path(project.directory).resolve().name})"

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            for i, (tab, title, pane) in enumerate(TABS):
                key = f"F{i + 2}"
                with TabPane(f"{key} {title}", id=tab):
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
        # Focus leaves the old tab first: left in a box there, it would move to the next widget of that tab as the tab
        # hides, and bring the tab back.
        self.set_focus(None)
        self.query_one(TabbedContent).active = tab

    def action_tab_key(self, key: str) -> None:
        tab = self.query_one(TabbedContent).active
        pane = self.query_one(f"#{tab}-pane", Pane)
        action = pane.TAB_KEYS.get(key)
        if action:
            getattr(pane, f"action_{action}")()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def _fatal_error(self) -> None:
        # Textual's own crash report shows every local variable (document texts, vectors): data that is no business
        # of a terminal. The traceback alone is what a bug report needs; the shell gets a non-zero exit (see `run`).
        from rich.traceback import Traceback

        self.bell()
        self._exit_renderables.append(Traceback(show_locals=False, width=None))
        self._close_messages_no_wait()

    async def action_quit(self) -> None:
        distill = self.query_one("#distill-pane", Distill)
        if distill.running:
            distill.stop_requested = True  # the loop stops at its next step; the run stays resumable
        self.exit()


def default_annotator() -> str:
    """Whose labels these are: KDSTUDIO_ANNOTATOR, else the operating system's user."""
    import getpass
    import os

    try:
        return os.environ.get("KDSTUDIO_ANNOTATOR") or getpass.getuser()
    except (KeyError, OSError):  # no user name (a container without /etc/passwd entry)
        return "unknown"


def run(directory: Path, annotator: str | None = None) -> int:
    """The app on this terminal; its exit status (non-zero when it stopped on an error)."""
    with Project.open(directory) as project:
        app = KdStudioApp(project, annotator)
        app.run()
    return app.return_code or 0
