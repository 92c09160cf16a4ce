"""Every declared setting and plugin option keeps its own promise: its default passes its own check, a value outside
its bounds (or NaN) is refused with its name, its text form reads back as the same value, and the command line,
kdstudio.toml and the JSON Schema all know it."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, cli

from kdstudio.errors import KdError
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.settings import settings_of

SETTINGS = list(settings_of(DistillConfig).values())
OPTIONS = [(kind, name, option) for kind in ("selector", "teacher", "student", "doubt", "free_labels", "encoder",
                                             "engine", "exporter")
           for name, registered in sorted(get_plugins().registered(kind).items())
           for option in registered.cls.options]
HELP = cli("distill", "--help").stdout
SCHEMA = json.loads((ROOT / "kdstudio" / "schemas" / "distill.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("declared", SETTINGS, ids=[s.name for s in SETTINGS])
def test_a_run_setting_keeps_its_declaration(declared):
    assert declared.check(declared.default) == declared.default
    assert declared.flag in HELP and declared.name in SCHEMA["properties"]
    if declared.type in (int, float) and declared.default not in (None, *declared.spec.literals):
        assert declared.parse(str(declared.default)) == declared.default
    if declared.spec.low is not None:
        with pytest.raises(KdError, match=rf"^{declared.name} = .* is outside"):
            declared.check(declared.type(declared.spec.low - 1))
    if declared.type is float:
        with pytest.raises(KdError, match=rf"^{declared.name} = nan is not a finite number"):
            declared.parse("nan")
    if declared.type is not str:
        with pytest.raises(KdError, match=rf"^{declared.name} = "):
            declared.check("not a value")
    assert DistillConfig.layered({declared.name: declared.default}, {}) == DistillConfig()


@pytest.mark.parametrize(("kind", "plugin", "option"), OPTIONS, ids=[f"{k}:{p}:{o.name}" for k, p, o in OPTIONS])
def test_a_plugin_option_keeps_its_declaration(kind: str, plugin: str, option):
    assert option.coerce(option.default) == option.default or option.default is None
    if option.low is not None:
        with pytest.raises(KdError, match=rf"option {option.name}: .* is outside"):
            option.coerce(str(option.low - 1))
    if option.high is not None:
        with pytest.raises(KdError, match=rf"option {option.name}: .* is outside"):
            option.coerce(str(option.high + 1))
    if option.type is float:
        with pytest.raises(KdError, match="is not a finite number"):
            option.coerce("nan")
        with pytest.raises(KdError, match="is not a finite number"):
            option.coerce(math.inf)
    if option.type in (int, float):
        with pytest.raises(KdError, match=rf"option {option.name}: 'many' is not a"):
            option.coerce("many")
