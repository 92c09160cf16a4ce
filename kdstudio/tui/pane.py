"""The base of every tab's content, and the helpers that show data as data."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from rich.text import Text
from textual.widget import Widget
from textual.widgets import RichLog

from kdstudio.project import Project
from kdstudio.terminal import shown, shown_text


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


class DataLog(RichLog):
    """A pane's log. Its lines carry labels, provider errors and server answers, which are data: no markup, and control
    characters shown escaped (tables escape their own cells)."""

    def write(self, content: Any, *args: Any, **kwargs: Any) -> DataLog:
        if isinstance(content, str):
            content = Text(shown(content))
        elif isinstance(content, Text):
            content = shown_text(content)
        super().write(content, *args, **kwargs)
        return self


def data_log(log_id: str) -> DataLog:
    """min_width: unless told, RichLog renders 78 columns or more, past the edge of an 80x24 screen."""
    return DataLog(id=log_id, wrap=True, min_width=20, markup=False)
