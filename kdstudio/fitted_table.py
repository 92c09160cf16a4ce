"""Tables that fit the width they are printed at without losing a character: cells wrap, numbers keep every digit,
and when even wrapped columns cannot fit, the least important columns are left out, with a line naming them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from kdstudio.terminal import shown, shown_text


@dataclass(frozen=True)
class Col:
    name: str
    right: bool = False  # right-justified (numbers)
    keep: int = 9  # columns with the lowest `keep` are left out first when the table cannot fit; 9 is never left out


class FittedTable:
    """A rich renderable: the table is laid out at print time, for the width it is printed at."""

    def __init__(self, title: str, columns: Sequence[Col], rows: Iterable[Sequence[RenderableType]], *,
                 total: Sequence[RenderableType] | None = None) -> None:
        self.title = shown(title)
        self.columns = list(columns)
        # Cells hold data: control characters are shown escaped before the widths are measured.
        self.rows = [[_shown_cell(c) for c in r] for r in rows]
        self.total = [_shown_cell(c) for c in total] if total is not None else None

    def _table(self, keep: list[int], widths: dict[int, int] | None = None) -> Table:
        table = Table(title=self.title, title_justify="left")
        for i in keep:
            col = self.columns[i]
            table.add_column(col.name, justify="right" if col.right else "left", overflow="fold",
                             width=None if widths is None else widths[i])
        for row in self.rows:
            table.add_row(*(row[i] for i in keep))
        if self.total is not None:
            table.add_section()
            table.add_row(*(self.total[i] for i in keep))
        return table

    def _cells(self, i: int) -> list[RenderableType]:
        return [r[i] for r in self.rows] + ([self.total[i]] if self.total is not None else [])

    def _need(self, i: int) -> int:
        """The width column `i` cannot go below: a number's whole width (it is never wrapped), or a few characters of
        text, which wraps (headers wrap too)."""
        header = min(max(len(w) for w in self.columns[i].name.split()), HEADER_MIN)
        if self.columns[i].right:
            # Numbers come as plain strings; a Text in a number column (a note) wraps like any text.
            return max(max((_width(c) for c in self._cells(i) if isinstance(c, str)), default=1), header)
        words = [len(w) for c in self._cells(i) for w in str(c).split()]
        return max(header, 3, min(max(words, default=3), TEXT_MIN))

    def _ideal(self, i: int) -> int:
        lines = [len(line) for c in self._cells(i) for line in str(c).splitlines()]
        return max([len(self.columns[i].name), *lines, 1])

    def _widths(self, keep: list[int], room: int) -> dict[int, int]:
        """Every column at its need, then the spare room shared out a character at a time, to the columns furthest
        below their natural width first."""
        widths = {i: self._need(i) for i in keep}
        ideal = {i: max(self._ideal(i), widths[i]) for i in keep}
        spare = room - sum(widths.values())
        while spare > 0:
            short = [i for i in keep if widths[i] < ideal[i]]
            if not short:
                break
            for i in sorted(short, key=lambda i: widths[i] / ideal[i])[:spare]:
                widths[i] += 1
                spare -= 1
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        keep = list(range(len(self.columns)))
        droppable = sorted((c.keep, -i) for i, c in enumerate(self.columns) if c.keep < 9)
        dropped: list[str] = []
        # Each column costs its content plus a border and a space either side; the table one border more.
        room = lambda: options.max_width - 3 * len(keep) - 1  # noqa: E731
        while sum(self._need(i) for i in keep) > room() and droppable:
            minus_i = droppable.pop(0)[1]
            keep.remove(-minus_i)
            dropped.append(self.columns[-minus_i].name)
        yield self._table(keep, self._widths(keep, room()))
        if dropped:
            yield Text(f"left out at {options.max_width} columns: {', '.join(dropped)} (a wider terminal shows them; "
                       "--json has everything)", style="dim")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._table(list(range(len(self.columns)))))


TEXT_MIN = 8  # characters a text column keeps before anything else is left out
HEADER_MIN = 5  # a header's word is cut into pieces no narrower than this


def _width(cell: RenderableType) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text(str(cell)).cell_len


def _shown_cell(cell: RenderableType) -> RenderableType:
    if isinstance(cell, str):
        return shown(cell)
    return shown_text(cell) if isinstance(cell, Text) else cell
