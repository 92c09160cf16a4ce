"""End to end, as a new user runs it: the real CLI in child processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, run_closed, write

from kdstudio.project import Project


def test_python_dash_m_and_the_console_script_are_the_same_cli():
    module = run_cli("--help")
    script = subprocess.run([str(Path(sys.executable).parent / "kdstudio"), "--help"], capture_output=True, text=True)
    assert module.returncode == script.returncode == 0
    assert module.stdout == script.stdout
    for command in ("init", "import", "datasets", "embed", "status", "plugins", "demo"):
        assert command in module.stdout


def test_the_cli_and_its_plugins_start_without_loading_models_or_litellm():
    code = ("import sys, kdstudio.cli; kdstudio.cli.get_plugins(); print([m for m in ('torch', "
            "'sentence_transformers', 'transformers', 'sklearn', 'litellm') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_bbc_news_import_embed_status(tmp_path: Path):
    directory = tmp_path / "bbc"
    imported = run_cli("datasets", "import", "bbc-news", str(directory), "--limit", "120")
    assert imported.returncode == 0, imported.stderr
    found = re.search(r"read 120 rows, imported (\d+) .* dropped (\d+) duplicates", imported.stdout)
    assert found, imported.stdout
    n = int(found.group(1))
    assert n + int(found.group(2)) == 120  # BBC News holds some duplicate articles; they are dropped
    embedded = run_cli("embed", "-p", str(directory))
    assert embedded.returncode == 0, embedded.stderr
    assert f"embedded {n} documents with all-MiniLM-L6-v2" in embedded.stdout
    status = run_cli("status", "-p", str(directory))
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert f"{n} documents" in out
    assert "all-MiniLM-L6-v2" in out and "100.0%" in out and "384" in out
    for label in ("business", "entertainment", "politics", "sports", "tech"):
        assert label in out
    assert "Spent: $0.0000 on 0 teacher calls" in out
    rerun = run_cli("embed", "-p", str(directory))
    assert "embedded 0 documents" in rerun.stdout


def test_init_with_a_labels_file_then_import(tmp_path: Path):
    labels = write(tmp_path / "labels.txt", "billing: invoices and payments\nbug: something is broken\n")
    created = run_cli("init", str(tmp_path / "p"), "--labels-file", str(labels))
    assert created.returncode == 0, created.stderr
    assert "billing, bug" in created.stdout
    data = write(tmp_path / "tickets.csv", "body,kind\nI was charged twice,billing\nThe app crashes,bug\n")
    result = run_cli("import", str(data), "-p", str(tmp_path / "p"), "--text-column", "body", "--label-column",
                     "kind", "--split", "val=0.5")
    assert result.returncode == 0, result.stderr
    assert "imported 2" in result.stdout
    assert "billing" in (tmp_path / "p" / "kdstudio.toml").read_text()


def test_init_needs_exactly_one_label_source(tmp_path: Path):
    result = run_cli("init", str(tmp_path / "p"))
    assert result.returncode == 1
    assert "exactly one of --labels or --labels-file" in result.stderr


@pytest.mark.slow
def test_demo_runs_the_main_job_on_a_slice(tmp_path: Path):
    """The main job, as a process: first with standard input closed (it never reads it), then again with standard
    output closed (it still does its work, and embeds nothing twice). tests/test_streams.py leaves the demo to this."""
    demo = ["demo", "--dir", str(tmp_path / "demo"), "--limit", "120", "--budget-labels", "40"]
    result = run_closed(demo, "<&-", tmp_path, columns=200)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    for step in ("1. import", "2. embed", "3. distill", "4. export", "5. status"):
        assert step in result.stdout
    assert (tmp_path / "demo" / "model" / "model.onnx").is_file() and "checked on" in result.stdout
    imported = re.search(r"read 120 rows, imported (\d+)", result.stdout)
    assert imported and f"embedded {imported.group(1)} documents" in result.stdout
    assert "zero-shot teacher" in result.stdout and "SIMULATED" not in result.stdout
    assert "round   1  labels    40" in result.stdout and "label budget reached (40/40)" in result.stdout
    teacher_acc = [float(x) for x in re.findall(r"teacher acc \(gold\) (0\.\d+)", result.stdout)]
    assert teacher_acc and min(teacher_acc) > 0.6  # the offline teacher is a real, imperfect classifier
    compared = re.search(r"student test accuracy (0\.\d+), teacher (0\.\d+) on the same documents: the student "
                         r"(has passed|has not passed) its teacher", result.stdout)
    assert compared and (float(compared.group(1)) > float(compared.group(2))) == (compared.group(3) == "has passed")
    assert "audit -p" in result.stdout and "--filter suspect" in result.stdout
    assert "check -p" in result.stdout and "--size 100" in result.stdout
    curve = tmp_path / "demo" / "learning-curve.png"
    assert f"learning curve drawn to {curve}" in result.stdout and curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Project.open(tmp_path / "demo", read_only=True) as project:
        embedded = project.store.con.execute("SELECT count(*), max(created_at) FROM vector_rows").fetchone()
    again = run_closed(demo, ">&-", tmp_path, columns=200)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and "Exception ignored" not in again.stderr, again.stderr
    with Project.open(tmp_path / "demo", read_only=True) as project:
        assert project.store.con.execute("SELECT count(*), max(created_at) FROM vector_rows").fetchone() == embedded
        assert [r.status for r in project.runs()] == ["finished", "finished"]
