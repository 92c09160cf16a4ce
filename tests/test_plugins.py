from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, plugin_module, run_cli

from kdstudio.errors import KdError, PluginNotFound
from kdstudio.hookspecs import hookimpl
from kdstudio.interfaces import Dataset, Doc, Option, Selection, Selector, TeachContext
from kdstudio.plugins import Plugins


def test_builtins_come_through_the_entry_point_group():
    plugins = Plugins.load()
    datasets = plugins.registered("dataset")
    assert {"bbc-news", "20newsgroups", "reuters-r8"} <= set(datasets)
    assert datasets["bbc-news"].distribution.startswith("kdstudio ")
    assert datasets["bbc-news"].plugin == "kdstudio:datasets"
    assert plugins.errors == []


class Nearest(Selector):
    """Picks the documents nearest to the labelled ones."""

    name = "nearest"
    options = (Option("k", int, 5, "neighbours"), Option("metric", str, "cosine", "distance", ("cosine", "l2")))

    def select(self, context, k):
        return Selection(list(range(min(k, context.n_pool))), [0.0] * min(k, context.n_pool))


def test_a_plugin_that_raises_is_reported_and_skipped_while_others_load():
    @hookimpl
    def register_selectors(register):
        raise RuntimeError("boom at registration")

    @hookimpl
    def register_selectors_ok(register):
        register(Nearest)

    broken = plugin_module("broken", register_selectors=register_selectors)
    good = plugin_module("good", register_selectors=hookimpl(specname="register_selectors")(
        lambda register: register(Nearest)))
    plugins = Plugins.load(extra=[("broken", broken), ("good", good)])
    assert [e.plugin for e in plugins.errors] == ["broken"]
    assert "boom at registration" in plugins.errors[0].error
    assert plugins.get("selector", "nearest").cls is Nearest
    assert "bbc-news" in plugins.registered("dataset")


def test_registering_something_that_is_not_a_component_is_an_error():
    bad = plugin_module("bad", register_datasets=hookimpl(specname="register_datasets")(lambda register: register(42)))
    plugins = Plugins.load(extra=[("bad", bad)])
    assert "not a Dataset" in plugins.errors[0].error


def test_unknown_names_list_what_is_registered():
    with pytest.raises(PluginNotFound, match="registered: 20newsgroups, bbc-news, reuters-r8"):
        Plugins.load().get("dataset", "imdb")


def test_options_are_typed_and_checked():
    selector = Nearest(k="7")
    assert selector.k == 7 and selector.metric == "cosine"
    with pytest.raises(KdError, match="unknown option"):
        Nearest(radius=2)
    with pytest.raises(KdError, match="not one of"):
        Nearest(metric="manhattan")
    with pytest.raises(KdError, match="is not a whole number"):
        Nearest(k="many")
    assert Nearest.summary() == "Picks the documents nearest to the labelled ones."


def test_plugins_command_lists_every_kind_with_docs_and_distribution():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for title in ("Selectors", "Teachers", "Students", "Exporters", "Review backends", "Datasets"):
        assert title in result.stdout
    assert "bbc-news" in result.stdout and "BBC News: 2,225 articles" in result.stdout
    assert "kdstudio 0.1.0" in result.stdout


def _fake_distribution(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_an_entry_point_that_fails_to_import_is_reported_by_the_cli(tmp_path: Path):
    site = tmp_path / "site"
    _fake_distribution(site, "kdstudio-broken", "[kdstudio]\nbroken = kdstudio_broken_plugin\n")
    (site / "kdstudio_broken_plugin.py").write_text("raise ImportError('missing dependency: frobnicate')\n")
    result = run_cli("plugins", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "kdstudio-broken:broken (kdstudio-broken 1.0) failed to load and was skipped" in out
    assert "missing dependency: frobnicate" in out
    assert "bbc-news" in out  # the rest still loaded


def test_example_third_party_plugin_installs_and_appears(tmp_path: Path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(ROOT / "examples" / "kdstudio-keyword-teacher")],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(target) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = run_cli("plugins", env=env)
    assert result.returncode == 0, result.stderr
    assert "keywords" in result.stdout
    assert "kdstudio-keyword-teacher 0.1.0" in result.stdout
    assert "rules: str" in result.stdout
    # And it really works as a teacher.
    sys.path.insert(0, str(target))
    try:
        from kdstudio_keyword_teacher import KeywordTeacher
    finally:
        sys.path.remove(str(target))
    teacher = KeywordTeacher(rules="sports=goal|match;tech=chip")
    docs = [Doc("d1", "A late goal won the match"), Doc("d2", "Nothing here")]
    labelled = list(teacher.label(docs, TeachContext(["sports", "tech"])))
    assert labelled[0].label == "sports" and labelled[0].confidence == 1.0
    assert labelled[1].label is None and labelled[1].error


def test_dataset_base_is_the_registered_kind():
    assert issubclass(Plugins.load().get("dataset", "bbc-news").cls, Dataset)
