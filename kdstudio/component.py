"""The base of every class a plugin registers: a `name`, a docstring (its first line is shown by
`kdstudio plugins`) and typed `options`."""

from __future__ import annotations

import inspect
import math
from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

from kdstudio.errors import KdError


@dataclass(frozen=True)
class Option:
    """One typed, documented parameter of a plugin class: its type, default, bounds (inclusive) or choices, and help,
    declared once. Every value is checked where it enters (a command-line string, kdstudio.toml, a saved run), and
    anything outside is one KdError naming the option: never NaN, never a string where a number belongs."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None

    def coerce(self, value: Any) -> Any:
        if value is None and self.default is None:
            return None  # an optional setting left unset (e.g. a price litellm already knows)
        if isinstance(value, str) and self.type is not str:
            value = self._parse(value)
        value = self._typed(value)
        if self.type in (int, float) and not self._inside(value):
            raise KdError(f"option {self.name}: {value!r} is outside {self.bounds()}")
        if self.choices is not None and value not in self.choices:
            raise KdError(f"option {self.name}: {value!r} is not one of {list(self.choices)}")
        return value

    def _parse(self, text: str) -> Any:
        try:
            if self.type is bool:
                return {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}[
                    text.strip().lower()]
            return self.type(text.strip())
        except (ValueError, KeyError):
            raise KdError(f"option {self.name}: {text!r} is not {_a(self.type)}") from None

    def _typed(self, value: Any) -> Any:
        wanted = self.type
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
            raise KdError(f"option {self.name}: {value!r} is not {_a(wanted)}")
        if wanted is float and not math.isfinite(value):
            raise KdError(f"option {self.name}: {value!r} is not a finite number")
        return value

    def _inside(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"[{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f">= {self.low:g}"
        return f"<= {self.high:g}" if self.high is not None else "any"

    def describe(self) -> str:
        choices = f" {{{'|'.join(map(str, self.choices))}}}" if self.choices else ""
        bounds = f" in {self.bounds()}" if self.low is not None or self.high is not None else ""
        return f"{self.name}: {self.type.__name__}{choices}{bounds} = {self.default!r}"


def _a(kind: type) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(kind, kind.__name__)


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
