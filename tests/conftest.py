from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdstudio.config import Label
from kdstudio.project import Project

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
LABELS = ["sports", "politics", "tech"]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process, as a user would run it."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kdstudio", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path):
    with Project.init(tmp_path / "proj", [Label(name) for name in LABELS]) as p:
        yield p


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def embedded_slice(directory: Path, limit: int, seed: int) -> Path:
    """A stratified slice of bbc-news, imported and embedded: built once per test module, copied per test."""
    project, _ = Project.from_dataset("bbc-news", directory, limit=limit, seed=seed)
    with project:
        project.embed()
    return directory


def fresh_copy(directory: Path, tmp_path: Path) -> Path:
    copy = tmp_path / directory.name
    shutil.copytree(directory, copy)
    return copy
