from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdstudio.config import Label
from kdstudio.loop import DistillConfig
from kdstudio.project import Project

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "PYTEST_XDIST_WORKER" in os.environ:
    # One worker per core: torch's own threads (one per core by default, in every worker and every CLI child) would
    # oversubscribe the cores, and spinning OpenMP threads cost more CPU than they save. Set before torch loads.
    for knob in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(knob, "1")
# Encoders built on first use (the static one) go to a cache of this test session, never the user's; set before any
# child process or Ray cluster starts, so that they all share it.
CACHE = Path(tempfile.mkdtemp(prefix="kdstudio-test-cache-"))
os.environ["KDSTUDIO_CACHE_DIR"] = str(CACHE)
ROOT = Path(__file__).resolve().parent.parent
LABELS = ["sports", "politics", "tech"]
# The suite's own plugin (a test encoder whose vectors cost nothing) loads through the ordinary plugin machinery, in
# this process and in every kdstudio process a test starts.
os.environ["KDSTUDIO_PLUGINS"] = "kdstudio_testkit"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
# The in-process command line (`cli`) prints at the width a child process gets (see run_cli).
os.environ["COLUMNS"] = "200"
TEST_ENCODER = "hashed"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process, as a user would run it."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kdstudio", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input_text)


@dataclass
class CliResult:
    """What `cli` gives back: the shape of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def cli(*args: str, input_text: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """The command line in this process (click's runner): for tests of behaviour rather than of being a process."""
    from click.testing import CliRunner

    from kdstudio.cli import cli as command

    result = CliRunner().invoke(command, list(args), input=input_text, env=env, catch_exceptions=True)
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    return CliResult(result.exit_code, result.stdout, result.stderr, unexpected)


def cheap_slice(directory: Path, limit: int, seed: int, **options) -> Path:
    """A stratified slice of bbc-news embedded with the test encoder (no model weights; seconds)."""
    project, _ = Project.from_dataset("bbc-news", directory, limit=limit, seed=seed, **options)
    with project:
        project.embed(encoder=TEST_ENCODER)
    return directory


@pytest.fixture
def project(tmp_path: Path):
    with Project.init(tmp_path / "proj", [Label(name) for name in LABELS]) as p:
        yield p


def plugin_module(name: str, **attrs) -> types.ModuleType:
    """A module object standing in for a plugin's, with `attrs` (its hookimpls) in it."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


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


def unembedded_slice(base: Path, limit: int, seed: int) -> dict:
    """A bbc-news slice imported but not embedded (for engines to embed), and the ids and vectors that the
    in-process engine gives it (computed on a copy)."""
    project, _ = Project.from_dataset("bbc-news", base / "bbc", limit=limit, seed=seed)
    project.close()
    with Project.open(fresh_copy(base / "bbc", base / "local")) as local:
        local.embed()
        ids, matrix = local.store.embedding_matrix(local.config.embedding.model)
    return {"project": base / "bbc", "ids": ids, "vectors": matrix}


def fresh_copy(directory: Path, tmp_path: Path) -> Path:
    copy = tmp_path / directory.name
    shutil.copytree(directory, copy)
    return copy


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A bbc-news slice, embedded and distilled, with its best student exported in fp32 and int8 (shared by the
    export and scale-out tests)."""
    base = tmp_path_factory.mktemp("export")
    project, _ = Project.from_dataset("bbc-news", base / "bbc", limit=300, seed=4)
    with project:
        project.embed()
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=60))
    fp32 = run_cli("export", "-p", str(base / "bbc"), "--out", str(base / "fp32"), "--license", "apache-2.0",
                   "--language", "en")
    int8 = run_cli("export", "-p", str(base / "bbc"), "--out", str(base / "int8"), "--quantize", "int8")
    return {"base": base, "project": base / "bbc", "fp32": base / "fp32", "int8": base / "int8",
            "fp32_run": fp32, "int8_run": int8}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
