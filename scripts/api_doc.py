"""Writes docs/api.md, the Python API reference, from the façade's own signatures and docstrings: `Project` and the
types it hands out. `python scripts/api_doc.py --check` fails when the page and the code disagree (the test suite
runs it)."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path

from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.runtime import Cascade, Classifier

PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"
INTRO = """# Python API

Generated from the code by `scripts/api_doc.py` (the test suite checks that it is current). `Project` is the one
façade the command line, the terminal UI and the tests use; `kdstudio.runtime` runs an exported model with
onnxruntime and tokenizers only.

```python
from kdstudio.project import Project
from kdstudio.loop import DistillConfig

with Project.open("bbc") as project:
    result = project.distill(DistillConfig(selector="margin", budget_labels=200))
    report = project.export("bbc-model", quantize="int8")
```
"""


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(undocumented)")


def _members(cls: type) -> list[str]:
    lines = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__init__":
            continue
        function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        if isinstance(member, property):
            lines += [f"### `{cls.__name__}.{name}` (property)", "", _doc(member), ""]
        elif inspect.isfunction(function) or inspect.ismethod(function):
            if name == "__init__" and function is object.__init__:
                continue
            signature = str(inspect.signature(function)).replace("self, ", "").replace("(self)", "()")
            lines += [f"### `{cls.__name__}.{name}{signature}`", "", _doc(function), ""]
    return lines


def _fields(cls: type) -> list[str]:
    lines = ["| field | default |", "| --- | --- |"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            "(computed)" if f.default_factory is dataclasses.MISSING else repr(f.default_factory()))
        lines.append(f"| `{f.name}` | `{default!r}` |" if not isinstance(default, str) or default != "(computed)"
                     else f"| `{f.name}` | (required) |")
    return lines


def render() -> str:
    parts = [INTRO, "## `kdstudio.project.Project`", "", _doc(Project), "", *_members(Project),
             "## `kdstudio.loop.DistillConfig`", "", _doc(DistillConfig), "", *_fields(DistillConfig), "",
             "## `kdstudio.runtime.Classifier`", "", _doc(Classifier), "", *_members(Classifier),
             "## `kdstudio.runtime.Cascade`", "", _doc(Cascade), "", *_members(Cascade)]
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python scripts/api_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
