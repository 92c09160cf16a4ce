"""Every command as a real process with its standard input closed (`<&-`) and with its standard output closed
(`>&-`), and a distillation whose reader goes away (`| head`): output that goes nowhere never ends or fails a run,
and a command that needs what is missing says so in one line."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest
from conftest import ROOT, cheap_slice, fresh_copy, run_closed, write

from kdstudio.loop import DistillConfig
from kdstudio.project import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = cheap_slice(tmp_path_factory.mktemp("streams") / "bbc", limit=120, seed=9)
    with Project.open(directory) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=10, budget_labels=30, val_limit=10))
    return directory


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += every_command(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def arguments(command: tuple[str, ...], project: Path, work: Path) -> list[str]:
    """A realistic command line for each command, against a small distilled project."""
    p = ["-p", str(project)]
    return {
        ("init",): [str(work / "new"), "--labels", "a,b"],
        ("import",): [str(write(work / "more.csv", "text\nextra document one\nextra document two\n")), *p],
        ("split",): [*p, "val=0.05"],
        ("datasets", "list"): [],
        ("datasets", "import"): ["bbc-news", str(work / "ds"), "--limit", "30"],
        ("embed",): p,
        ("distill",): [*p, "--teacher", "oracle", "--budget-labels", "20", "--seed", "3"],
        ("runs",): p,
        ("status",): p,
        ("cost",): p,
        ("audit",): [*p, "--top", "3"],
        ("export",): [*p, "--out", str(work / "model")],
        ("labels", "export"): [*p, "--out", str(work / "labels.parquet")],
        ("predict",): [str(work / "no-model"), "-"],
        ("review", "push"): [*p, "--preview"],
        ("review", "pull"): p,
        ("review", "report"): p,
        ("review", "connect"): [*p, "--url", "http://127.0.0.1:9"],  # no Label Studio here: one line, exit 1
        ("review", "serve"): [*p, "--port", "9"],
        ("tui",): p,
        ("plugins",): [],
    }.get(command, p)


def run(command: tuple[str, ...], args: list[str], redirect: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_closed([*command, *args], redirect, cwd)


# The demo, the longest command by far, runs with each stream closed in tests/test_cli.py's demo test (its first run
# with standard input closed, its second with standard output closed), which also checks what it printed and made.
RUN_ELSEWHERE = {("demo",)}


def test_every_command_with_standard_input_or_output_closed(base: Path, tmp_path: Path):
    from kdstudio.cli import cli

    commands = every_command(cli)
    assert len(commands) >= 19 and set(commands) >= RUN_ELSEWHERE, commands
    commands = [c for c in commands if c not in RUN_ELSEWHERE]
    jobs = []
    for redirect in ("<&-", ">&-"):
        for command in commands:
            work = tmp_path / f"{'-'.join(command)}{'-in' if redirect == '<&-' else '-out'}"
            work.mkdir()
            project = fresh_copy(base, work)
            jobs.append((command, redirect, arguments(command, project, work), work))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: (job, run(job[0], job[2], job[1], job[3])), jobs))
    for (command, redirect, _, _), result in results:
        what = f"{' '.join(command)} {redirect}: {result.stderr[-1500:]}"
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, what
        assert result.returncode in (0, 1), what
        if result.returncode == 1:
            errors = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
            assert len(errors) == 1, what
    failed = {(" ".join(c), r) for (c, r, _, _), res in results if res.returncode}
    # What needs a closed stream refuses in one line; everything else does its work whatever is closed.
    assert ("tui", "<&-") in failed and ("tui", ">&-") in failed
    assert ("predict", "<&-") in failed  # no model folder either, but the input is missing first or second
    assert {("status", "<&-"), ("status", ">&-"), ("distill", ">&-"), ("distill", "<&-"), ("runs", ">&-"),
            ("audit", ">&-"), ("plugins", ">&-"), ("embed", "<&-"), ("labels export", "<&-"),
            ("labels export", ">&-")}.isdisjoint(failed), failed


def test_a_paid_run_with_standard_input_closed_does_not_ask_and_does_not_crash(base: Path, tmp_path: Path):
    project = fresh_copy(base, tmp_path)
    result = run(("distill",), ["-p", str(project), "--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1",
                                "--price-in", "1", "--price-out", "1", "--budget-labels", "20"], "<&-", tmp_path)
    # Nothing listens at that address: one line saying so, never a crash over the missing terminal.
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach http://127.0.0.1:9/v1" in result.stderr, result.stderr


def test_a_reader_that_goes_away_neither_ends_nor_fails_the_run(base: Path, tmp_path: Path):
    project = fresh_copy(base, tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "kdstudio", "distill", "-p", str(project), "--teacher", "oracle",
                              "--seed-size", "5", "--batch", "5", "--budget-labels", "60", "--seed", "5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()  # `| head -1`: one line read, then the reader is gone
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    with Project.open(project) as opened:
        run_ = opened.runs()[-1]
    assert run_.status == "finished" and run_.stop_reason.startswith("label budget reached"), run_


def test_distill_into_head_finishes_its_run(base: Path, tmp_path: Path):
    """The shell's own `| head -2`, as a person types it: the run goes on to its end after head has gone."""
    project = fresh_copy(base, tmp_path)
    line = (f"{sys.executable} -m kdstudio distill -p {project} --teacher oracle --seed-size 5 --batch 5 "
            "--budget-labels 40 --seed 6 | head -2")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2, result.stderr
    with Project.open(project) as opened:
        assert opened.runs()[-1].status == "finished"
