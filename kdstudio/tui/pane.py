"""The base of every tab's content, and the helpers that show data as data."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from textual.widget import Widget
from textual.widgets import RichLog

from kdstudio.project import Project


class Pane(Widget):
    """A tab's content; `refresh_data` reloads it from the project when the tab is shown."""

    DEFAULT_CSS = "Pane { height: 1fr; }"
    TAB_KEYS: ClassVar[dict[str, str]] = {}  # F8 / F9 / F10 -> the name of an action_ method of the pane

    @property
    def project(self) -> Project:
        return self.app.project  # type: ignore[attr-defined]

    def refresh_data(self) -> None:
        pass


def text_of(value: Any) -> str:
    return "" if value is None else str(value)


def verbatim(text: str) -> str:
    """Text shown in a Markdown widget exactly as it is: a fenced block longer than any backtick run inside it."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def data_log(log_id: str) -> RichLog:
    """A pane's log. No markup: its lines carry labels, provider errors and server answers, which are data.
    min_width: unless told, RichLog renders 78 columns or more, past the edge of an 80x24 screen."""
    return RichLog(id=log_id, wrap=True, min_width=20)
