"""Every parser of user input, fuzzed (hypothesis): option strings of teachers, members, selectors and free labellers,
run settings as flags and as kdstudio.toml, --target, --split, label sets, cascade.json and the inputs of `predict`.
Whatever it is given, a parser answers or raises the project's own error (KdError): one line for the user, never a
traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdstudio.config import ProjectConfig, parse_labels_option, read_labels_file, validate_labels
from kdstudio.errors import KdError
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.settings import settings_of
from kdstudio.store import parse_split_option

# Text a person (or an attacker) types: words, the separators these formats use, quotes, brackets, controls.
PIECES = st.sampled_from(["=", ";", ",", " ", "'", '"', "\\", "[", "]", "{", "}", ":", ">=", "/", "\x00", "\x1b",
                          "\u202e", "\n", "nan", "inf", "-1", "0", "1e999", "0.5", "true", "llm", "oracle",
                          "zeroshot", "members", "model", "escalate", "first", "then", "below", "auto", "val",
                          "test", "accuracy", "usd", "100"])
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=12).map("".join)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def answers_or_refuses(call: Any, *args: Any) -> Any:
    """Run a parser: it may refuse with KdError, and nothing else."""
    try:
        return call(*args)
    except KdError as exc:
        assert exc.message  # something to say, on one line of its own
        return None


@FUZZ
@given(st.lists(TEXT, max_size=4))
def test_key_value_options(values: list[str]):
    from kdstudio.cli import _pairs

    answers_or_refuses(_pairs, tuple(values), "--teacher-option")


@FUZZ
@given(TEXT)
def test_members_of_a_committee_or_cascade(spec: str):
    from kdstudio_plugins.teachers.committee import parse_members

    answers_or_refuses(parse_members, spec, "members")


@FUZZ
@given(st.sampled_from(["committee", "cascade"]), st.dictionaries(st.sampled_from(
    ["members", "escalate", "first", "then", "below"]), TEXT, max_size=3))
def test_composite_teachers_from_their_options(name: str, options: dict[str, str]):
    cls = get_plugins().get("teacher", name).cls

    def build() -> Any:
        teacher = cls(**options)
        return teacher.parts  # members are parsed on first use

    answers_or_refuses(build)


@FUZZ
@given(st.data())
def test_every_plugin_option_from_text(data: st.DataObject):
    plugins = get_plugins()
    kind = data.draw(st.sampled_from(["selector", "teacher", "student", "doubt", "free_labels", "encoder"]))
    registered = plugins.registered(kind)
    cls = registered[data.draw(st.sampled_from(sorted(registered)))].cls
    if not cls.options:
        return
    option = data.draw(st.sampled_from(cls.options))
    value = data.draw(st.one_of(TEXT, st.floats(allow_nan=True), st.integers(), st.booleans(), st.none()))
    coerced = answers_or_refuses(option.coerce, value)
    if coerced is not None and option.type is float:
        assert coerced == coerced and abs(coerced) != float("inf")  # never NaN or infinite


@FUZZ
@given(st.data())
def test_every_run_setting_from_a_flag(data: st.DataObject):
    declared = data.draw(st.sampled_from([s for s in settings_of(DistillConfig).values() if s.type is not dict]))
    answers_or_refuses(declared.parse, data.draw(TEXT))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(settings_of(DistillConfig))), st.one_of(
    TEXT, st.integers(-10, 10**6), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.dictionaries(TEXT, st.one_of(TEXT, st.integers(), st.lists(st.integers(), max_size=2)), max_size=2)),
    max_size=4))
def test_a_distill_table_and_the_rules_between_settings(table: dict[str, Any]):
    def build() -> DistillConfig:
        config = DistillConfig.layered(table, {})
        config.validate()
        return config

    answers_or_refuses(build)


@FUZZ
@given(TEXT)
def test_targets_and_autopilot_rules(text: str):
    answers_or_refuses(lambda: DistillConfig(target=text).validate())
    answers_or_refuses(lambda: DistillConfig(stop_when_gain_below=text).validate())


SPLITS = st.lists(st.tuples(st.sampled_from(["val", "test", " val", "pool", ""]), st.sampled_from(["=", "", "=="]),
                            st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), TEXT)),
                  max_size=3).map(lambda parts: ",".join(a + b + c for a, b, c in parts))


@FUZZ
@given(st.one_of(TEXT, SPLITS))
def test_split_shares(text: str):
    shares = answers_or_refuses(parse_split_option, text)
    if shares is not None:
        assert all(0 <= v < 1 for v in shares.values()) and sum(shares.values()) < 1


@FUZZ
@given(TEXT)
def test_label_sets(text: str):
    answers_or_refuses(lambda: validate_labels(parse_labels_option(text), "--labels"))


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".txt", ".json"]))
def test_label_files(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"labels{suffix}"
        path.write_bytes(content)
        answers_or_refuses(read_labels_file, path)


TOML_LINES = st.sampled_from([
    "[project]", 'name = "x"', "[[labels]]", 'name = "a"', 'name = "b"', "name = 3", 'description = "d"',
    "[embedding]", 'encoder = "static"', "max_length = -1", "batch_size = 0", "options = 3", "[distill]",
    "batch = 5", "batch = -1", 'batch = "5"', "budget_usd = nan", "budget_usd = 0.5", 'teacher_options = { a = 1 }',
    "teacher_options = 3", "[review]", 'filter = "weird"', "below = 2", "limit = -3", "labels = [1, 2]",
    'labels = ["a", "b"]', "distill = 3", "[labels]", "x = {", 'val_limit = "auto"', 'val_limit = "many"'])


@FUZZ
@given(st.lists(st.one_of(TOML_LINES, TEXT), max_size=12))
def test_kdstudio_toml(lines: list[str]):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "kdstudio.toml").write_text("\n".join(lines), encoding="utf-8")

        def load() -> Any:
            config = ProjectConfig.load(Path(folder))
            DistillConfig.layered(config.distill, {}).validate()
            return config

        answers_or_refuses(load)


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(), TEXT),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
TIER = st.fixed_dictionaries({"folder": st.one_of(st.sampled_from(["fast", "slow", "../x", "a/b"]), JSON_VALUES),
                              "answers_at_or_above": JSON_VALUES})


@FUZZ
@given(st.one_of(JSON_VALUES, st.fixed_dictionaries({"tiers": st.lists(TIER, max_size=3),
                                                     "defer_below": JSON_VALUES})))
def test_cascade_descriptions(spec: Any):
    from kdstudio.runtime import Cascade

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "cascade.json").write_text(json.dumps(spec), encoding="utf-8")
        with pytest.raises(KdError):  # no tier folder exists, so at best the description passes and a tier fails
            Cascade(folder)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_predict_inputs(content: bytes, suffix: str):
    from kdstudio.predict_io import read_documents

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"in{suffix}"
        path.write_bytes(content)
        docs = answers_or_refuses(read_documents, str(path))
        if docs is not None:
            assert all(isinstance(t, str) for t in docs.texts)


@FUZZ
@given(st.binary(max_size=400))
def test_predict_on_standard_input(content: bytes):
    import io
    import sys

    from kdstudio.predict_io import read_documents

    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", errors="surrogateescape")
    try:
        docs = answers_or_refuses(read_documents, "-")
    finally:
        sys.stdin = saved
    if docs is not None:
        assert all(t.encode("utf-8") for t in docs.texts)  # never a lone surrogate handed to a tokenizer
