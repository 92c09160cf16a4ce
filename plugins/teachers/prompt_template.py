"""A labelling prompt of the user's own (`distill --prompt-file`): a Jinja2 template for the message that asks about one
document, given the document, the labels and their descriptions, and the few-shot examples. Guidelines are whatever
the template says. The template runs sandboxed and strict: a name it does not know is an error, not an empty string.
What kdstudio still says itself, in the system message, is that the document is data and how to answer."""

from __future__ import annotations

from typing import Any

from kdstudio.errors import KdError

VARIABLES = ("document", "labels", "taxonomy", "examples")
# What a template is rendered with to check it before anything is sent.
_SAMPLE = {"document": "<document>\nA sample document.\n</document>",
           "labels": [{"name": "a", "description": "the first class"}, {"name": "b", "description": ""}],
           "taxonomy": "- a: the first class\n- b", "examples": [{"text": "<document>\nan example\n</document>",
                                                                 "label": "a"}]}


class PromptTemplate:
    """A compiled template; `render` gives the user message for one document."""

    def __init__(self, source: str) -> None:
        from jinja2 import StrictUndefined, TemplateError
        from jinja2.sandbox import SandboxedEnvironment

        self.source = source
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        try:
            self._template = environment.from_string(source)
            rendered = self._template.render(**_SAMPLE)
        except TemplateError as exc:
            where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            raise KdError(f"the prompt template cannot be used{where}: {exc.message or exc}",
                          f"fix the template; it may use {', '.join(VARIABLES)} (see README, Teachers)") from None
        if "<document>" not in rendered:
            raise KdError("the prompt template never shows the document", "put {{ document }} where it goes")

    def render(self, document: str, labels: list[str], descriptions: dict[str, str], taxonomy: str,
               examples: list[tuple[str, str]]) -> str:
        from jinja2 import TemplateError

        values: dict[str, Any] = {
            "document": document, "taxonomy": taxonomy,
            "labels": [{"name": x, "description": descriptions.get(x, "")} for x in labels],
            "examples": [{"text": text, "label": label} for text, label in examples]}
        try:
            return self._template.render(**values)
        except TemplateError as exc:
            raise KdError(f"the prompt template failed on a document: {exc.message or exc}",
                          "fix the template (`distill --plan` shows it on a sample first)") from None
