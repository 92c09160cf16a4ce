"""Data written into Markdown (model and dataset cards) as literal text: never read as syntax, control characters
shown escaped."""

from __future__ import annotations

import re

from kdstudio.terminal import shown


def md_text(text: object) -> str:
    """Data (labels, names, paths) as literal Markdown text: every character Markdown could read as syntax is escaped,
    so that a label like `x|y` or `*urgent*` neither breaks a table nor turns into emphasis, and control characters
    are shown escaped (a card is read on terminals too)."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", shown(str(text))).replace("\n", " ")


def md_code(text: object) -> str:
    """Data as an inline code span, with a fence longer than any backtick run inside it."""
    text = shown(str(text)).replace("\n", " ")
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")
