"""The Corpus tab: every document, paged and filtered through the façade."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Select, Static

from kdstudio.terminal import shown
from kdstudio.tui.pane import Pane
from kdstudio.types import Filters


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
            yield Select([(Text(shown(x)), x) for x in self.app.project.labels], prompt="label", id="label")  # type: ignore
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
            table.add_row(*(Text(shown(c)) for c in cells), key=row.id)
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
            self.query_one("#corpus-detail", Static).update(Text(shown(text[:2000])))
