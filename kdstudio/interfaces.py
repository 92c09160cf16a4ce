"""What a plugin registers: small classes with a `name`, a docstring (its first line is shown by
`kdstudio plugins`) and typed `options`. The core only ever talks to these interfaces."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from kdstudio.errors import KdError


@dataclass(frozen=True)
class Option:
    """One typed, documented parameter of a plugin class."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str) and self.type is not str:
            try:
                value = {"true": True, "false": False}[value.lower()] if self.type is bool else self.type(value)
            except (ValueError, KeyError):
                raise KdError(f"option {self.name}: {value!r} is not a valid {self.type.__name__}") from None
        if self.choices is not None and value not in self.choices:
            raise KdError(f"option {self.name}: {value!r} is not one of {list(self.choices)}")
        return value

    def describe(self) -> str:
        choices = f" {{{'|'.join(map(str, self.choices))}}}" if self.choices else ""
        return f"{self.name}: {self.type.__name__}{choices} = {self.default!r}"


class Component:
    """Base of every registered class."""

    name: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **values: Any) -> None:
        known = {o.name: o for o in self.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise KdError(f"{self.name}: unknown option(s) {unknown}",
                          f"known options: {', '.join(known) or 'none'}")
        for option in self.options:
            setattr(self, option.name, option.coerce(values.get(option.name, option.default)))

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""


class Selector(Component):
    """Chooses which pool documents to send to the teacher next."""

    def select(self, pool_ids: Sequence[str], student: Any, budget: int, rng: Any, context: Any) -> list[str]:
        raise NotImplementedError


@dataclass
class TeacherLabel:
    doc_id: str
    label: str | None
    confidence: float | None = None
    probs: dict[str, float] | None = None
    cost_usd: float = 0.0
    error: str | None = None


class Teacher(Component):
    """Labels documents; may also generate new ones (PGKD)."""

    simulated: ClassVar[bool] = False

    def label(self, docs: Sequence[tuple[str, str]], labels: Sequence[Any], context: Any) -> list[TeacherLabel]:
        raise NotImplementedError


class Student(Component):
    """A small classifier trained on teacher (and human) labels."""

    def fit(self, X: Any, y: Sequence[str], sample_weight: Any = None) -> None:
        raise NotImplementedError

    def predict_proba(self, X: Any) -> Any:
        raise NotImplementedError


class Exporter(Component):
    """Writes a trained student to a deployable artifact."""

    def export(self, student: Any, out_dir: Any, context: Any) -> Any:
        raise NotImplementedError


class ReviewBackend(Component):
    """Sends teacher labels to people and brings their corrections back."""


@dataclass
class DatasetTable:
    """A dataset as one Arrow table plus how to read it: column names and the label set in order."""

    table: pa.Table
    labels: list[str]
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = "id"
    split_column: str | None = None


class Dataset(Component):
    """A labelled corpus that ships inside an installed package."""

    package: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""

    def load(self) -> DatasetTable:
        raise NotImplementedError


KINDS: dict[str, type[Component]] = {
    "selector": Selector,
    "teacher": Teacher,
    "student": Student,
    "exporter": Exporter,
    "review_backend": ReviewBackend,
    "dataset": Dataset,
}
