"""Settings declared once. A setting is a dataclass field made with `setting(...)`: its name and type come from the
field, its default, bounds, help and command-line spelling from here. Everything else is derived from the
declaration: the `distill` command's flags (kdstudio.cli), the Distill tab's form (kdstudio.tui.distill), the check of
kdstudio.toml's [distill] table, and the JSON Schema of a run's settings (kdstudio/schemas/distill.schema.json).

Values are checked where they enter, by type and bounds: never NaN, never a string where a number belongs. Errors
name the setting (`budget_usd`), not a flag: the command line adds its own spelling in front (see `Setting.flag`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from kdstudio.errors import ConfigError

_KEY = "kdstudio.setting"


@dataclass(frozen=True)
class Spec:
    """What a field declares besides its name and type."""

    help: str
    low: float | None = None
    high: float | None = None
    plugin: str | None = None  # the kind of plugin it names (teacher, selector, ...)
    flag: str | None = None  # its command-line flag when not --name-with-dashes
    aliases: tuple[str, ...] = ()
    negated: bool = False  # a setting that is true unless a --no-... flag says otherwise
    literals: tuple[str, ...] = ()  # words accepted besides the type's values (val_limit = "auto")
    choices: tuple[str, ...] = ()  # the only values a text setting takes (method: fixed or auto)
    metavar: str | None = None
    form: str | None = None  # the Distill tab's label, where its form shows it


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field declaring one setting (see Spec for the rest)."""
    metadata = {_KEY: Spec(help, **spec)}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    name: str
    type: type  # int, float, str, bool or dict (a plugin's options)
    optional: bool  # None is a value: no cap, not set
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        if self.spec.flag:
            return self.spec.flag
        return f"--{'no-' if self.spec.negated else ''}{self.name.replace('_', '-')}"

    # -- checking ---------------------------------------------------------------------------------------

    def check(self, value: Any) -> Any:
        """`value` as this setting holds it (an int given for a float setting becomes a float), or ConfigError."""
        if value is None and self.optional:
            return None
        if isinstance(value, str) and value in self.spec.literals:
            return value
        wanted = self.type
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
            raise ConfigError(f"{self.name} = {value!r} is not {self.kind()}", self.hint())
        if self.spec.choices and value not in self.spec.choices:
            raise ConfigError(f"{self.name} = {value!r} is not known", self.hint())
        if wanted is float and not math.isfinite(value):
            raise ConfigError(f"{self.name} = {value!r} is not a finite number", self.hint())
        if wanted is dict:
            bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str | int | float | bool)]
            if bad:
                raise ConfigError(f"{self.name}: {bad[0]!r} is not a plain option (a word = a string, number or "
                                  "true/false)", self.hint())
        if wanted in (int, float) and not self.inside(value):
            raise ConfigError(f"{self.name} = {value!r} is outside {self.bounds()}", self.hint())
        return value

    def parse(self, text: str) -> Any:
        """A value written as text (a flag, a form's box), checked. An empty text is None where None is a value."""
        text = text.strip()
        if text in self.spec.literals:
            return text
        if self.optional and text in ("", "none"):
            return None
        try:
            if self.type is bool:
                value: Any = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}[
                    text.lower()]
            elif self.type in (int, float):
                value = self.type(text)
            else:
                value = text
        except (ValueError, KeyError):
            raise ConfigError(f"{self.name} = {text!r} is not {self.kind()}", self.hint()) from None
        return self.check(value)

    def inside(self, value: float) -> bool:
        return (self.spec.low is None or value >= self.spec.low) and (self.spec.high is None or value <= self.spec.high)

    def bounds(self) -> str:
        low, high = self.spec.low, self.spec.high
        if low is not None and high is not None:
            return f"[{low:g}, {high:g}]"
        if low is not None:
            return f">= {low:g}"
        return f"<= {high:g}" if high is not None else "any"

    def kind(self) -> str:
        words = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
                 dict: "a table of options"}[self.type]
        if self.spec.choices:
            return f"one of {', '.join(self.spec.choices)}"
        extra = [repr(x) for x in self.spec.literals] + (["none"] if self.optional else [])
        return f"{words}{' or ' + ' or '.join(extra) if extra else ''}"

    def hint(self) -> str:
        bounds = f" in {self.bounds()}" if self.type in (int, float) and self.bounds() != "any" else ""
        return f"{self.name} is {self.kind()}{bounds}: {self.spec.help} (default {self.default!r})"

    # -- the JSON Schema ------------------------------------------------------------------------------------

    def json_schema(self) -> dict[str, Any]:
        kind = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}[self.type]
        schema: dict[str, Any] = {"type": [kind, "null"] if self.optional else kind, "description": self.spec.help,
                                  "default": self.default}
        if self.spec.low is not None:
            schema["minimum"] = self.spec.low
        if self.spec.high is not None:
            schema["maximum"] = self.spec.high
        if self.spec.choices:
            schema["enum"] = list(self.spec.choices)
        if self.spec.literals:
            schema = {"anyOf": [{k: v for k, v in schema.items() if k not in ("description", "default")},
                                {"enum": list(self.spec.literals)}],
                      "description": self.spec.help, "default": self.default}
        if self.type is dict:
            schema["additionalProperties"] = {"type": ["string", "number", "boolean"]}
        return schema


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings a dataclass declares, by name, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        kind, optional = _plain_type(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        found[f.name] = Setting(f.name, kind, optional, default, spec)
    return found


def _plain_type(hint: Any) -> tuple[type, bool]:
    """(the value type, whether None is allowed) of an annotation such as `int | None` or `dict[str, Any]`."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)]
    kind = typing.get_origin(kinds[0]) or kinds[0]
    if kind is str and len(kinds) > 1:  # `int | str`: a number, or one of the setting's literal words
        kind = next(k for k in kinds if k is not str)
    return kind, optional


def check_table(cls: type, table: dict[str, Any], where: str) -> dict[str, Any]:
    """A table of settings (kdstudio.toml's [distill], a saved run's settings), each checked; unknown names refused."""
    known = settings_of(cls)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where} has unknown settings {unknown}", f"known: {', '.join(known)}")
    checked = {}
    for name, value in table.items():
        try:
            checked[name] = known[name].check(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", exc.fix) from None
    return checked


def json_schema(cls: type, title: str, schema_id: str) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, "title": title,
            "type": "object", "properties": {s.name: s.json_schema() for s in settings_of(cls).values()},
            "additionalProperties": False}
