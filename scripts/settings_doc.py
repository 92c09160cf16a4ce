"""Writes what the run settings' declarations (kdstudio.loop.DistillConfig, see kdstudio.settings) imply outside the
code: the JSON Schema of a run's settings (kdstudio/schemas/distill.schema.json) and its section of docs/json.md.
`python scripts/settings_doc.py --check` fails when either disagrees with the code (the test suite runs it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdstudio.loop import DistillConfig
from kdstudio.settings import json_schema, settings_of

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "kdstudio" / "schemas" / "distill.schema.json"
PAGE = ROOT / "docs" / "json.md"
BEGIN, END = "<!-- settings: begin (scripts/settings_doc.py) -->", "<!-- settings: end -->"


def schema_text() -> str:
    document = json_schema(DistillConfig, "a run's settings: kdstudio.toml's [distill] table, `runs --json`'s config",
                           "kdstudio.distill/1")
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def section() -> str:
    rows = ["| field | type | meaning |", "| --- | --- | --- |"]
    for s in settings_of(DistillConfig).values():
        bounds = f", {s.bounds()}" if s.type in (int, float) and s.bounds() != "any" else ""
        rows.append(f"| `{s.name}` | {s.kind()}{bounds} | {s.spec.help} (default `{s.default!r}`; flag "
                    f"`{s.flag}`) |")
    return "\n".join([BEGIN, "", "## `kdstudio.distill/1`: a run's settings", "",
                      "What `runs --json` shows as a run's `config`, and what kdstudio.toml's `[distill]` table may "
                      "set. Generated from the settings' declarations by `scripts/settings_doc.py`; `vectors`, which a "
                      "run records beside them, names the vectors its students learned from.", "", *rows, "", END])


def page_text() -> str:
    page = PAGE.read_text(encoding="utf-8")
    if BEGIN in page:
        before, rest = page.split(BEGIN, 1)
        return before + section() + rest.split(END, 1)[1]
    return page.rstrip("\n") + "\n\n" + section() + "\n"


def main() -> int:
    wanted = {SCHEMA: schema_text(), PAGE: page_text()}
    if "--check" in sys.argv:
        stale = [str(p.relative_to(ROOT)) for p, text in wanted.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"out of date: {', '.join(stale)}; run `python scripts/settings_doc.py`", file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
