"""The base of every class a plugin registers: a `name`, a docstring (its first line is shown by
`kdstudio plugins`) and typed `options`."""

from __future__ import annotations

import inspect
from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

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


class Component(ABC):
    """Base of every registered class. Each kind's base marks what a plugin must implement as abstract: a class
    that misses one is a load error, not a failure halfway through a run."""

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
