"""What reaches a terminal. Data (documents, labels, paths, provider errors) is printed as data: never parsed as markup
(see the Consoles below), and never passed to the terminal as escape sequences. `shown` is the one function that makes
control characters and bidirectional overrides visible as escapes (`\\x1b`, `\\u202e`); the CLI's consoles apply it to
everything they print, and tables, the TUI and model cards apply it to data before laying it out, so that widths are
right. JSON output escapes these characters by itself and does not use it."""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

# Bidirectional embeddings, overrides and isolates, and the marks, which reorder what a reader sees (a file name that
# reads backwards); line and paragraph separators, which break lines where a terminal does not expect it.
_INVISIBLE = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029}
UNSAFE = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(
    {*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), *_INVISIBLE})) + "]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """`text` with every control character (but newline and tab) and every bidirectional control made visible."""
    return UNSAFE.sub(_escape, text) if UNSAFE.search(text) else text


def is_safe(text: str) -> bool:
    return UNSAFE.search(text) is None


def shown_text(text: Text) -> Text:
    """A rich Text with `shown` applied to its characters, its styles kept on the pieces they covered."""
    plain = text.plain
    if is_safe(plain):
        return text
    cuts = sorted({0, len(plain), *(s.start for s in text.spans), *(s.end for s in text.spans)})
    out = Text(style=text.style, justify=text.justify, overflow=text.overflow, no_wrap=text.no_wrap, end=text.end)
    for start, end in itertools.pairwise(cuts):
        styles = [s.style for s in text.spans if s.start <= start and s.end >= end]
        at = len(out.plain)
        out.append(shown(plain[start:end]))
        for style in styles:
            out.stylize(style, at, len(out.plain))
    return out


class SafeConsole(Console):
    """A Rich console for the command line: nothing it prints is parsed as markup or emoji codes, control characters
    in what it prints are shown escaped, and output that goes nowhere (a closed pipe, `| head`) is dropped instead of
    ending the program: a distillation whose watcher stopped reading goes on, and is not failed by it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # Segments flagged `control` are Rich's own cursor movements (a progress bar); every other one may hold data.
        return super()._render_buffer(segment if segment.control or is_safe(segment.text)
                                      else Segment(shown(segment.text), segment.style, None)
                                      for segment in buffer)

    def on_broken_pipe(self) -> None:
        # Rich's default raises SystemExit(1). From here on the output goes to /dev/null, and the command goes on.
        drop_output(self.file)


def drop_output(stream: Any) -> None:
    """Send everything written to `stream` (stdout or stderr, whose reader has gone) to /dev/null from now on."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to redirect
        pass


def stdin_is_terminal() -> bool:
    """Whether a person sits at standard input (False when it is closed, `<&-`, or a pipe)."""
    stream = sys.stdin
    try:
        return stream is not None and not stream.closed and stream.isatty()
    except (ValueError, OSError):
        return False
