"""Daily use from the command line: tables that keep every digit, --json documents that follow their schemas, learning
curves drawn to a real image, a target with no shell metacharacter, a paid run that asks first, and predictions that
say which input row they answer."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from conftest import cheap_slice, cli, fresh_copy, run_cli
from fake_llm_server import FakeLLM

from kdstudio.errors import KdError
from kdstudio.json_views import schema
from kdstudio.loop import DistillConfig
from kdstudio.project import Project


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bbc-news slice with two finished runs (a noisy simulated teacher, so that accuracies have many digits)."""
    directory = cheap_slice(tmp_path_factory.mktemp("daily") / "bbc", limit=150, seed=3)
    with Project.open(directory) as project:
        for selector in ("random", "margin"):
            project.distill(DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector=selector,
                                          seed_size=10, batch=10, budget_labels=30, val_limit=20))
    return directory


def _json(*args: str) -> dict:
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, schema(document["schema"].split(".")[1].split("/")[0]))
    return document


def test_every_json_document_follows_its_schema(distilled: Path):
    p = ["-p", str(distilled)]
    status = _json("status", *p)
    assert status["schema"] == "kdstudio.status/1" and status["documents"]["total"] >= 145
    assert [e["in_use"] for e in status["embeddings"]] == [True]
    runs = _json("runs", *p)["runs"]
    assert [r["selector"] for r in runs] == ["random", "margin"]
    assert all(r["labels"] == 30 and r["best"]["test"]["accuracy"] > 0 for r in runs)
    assert all(r["warning"] is None for r in runs)  # fixed runs record no judgement of a guess
    for run in runs:  # a run's settings follow the schema derived from their declarations
        jsonschema.validate({k: v for k, v in run["config"].items() if k != "vectors"}, schema("distill"))
    one = _json("runs", *p, "--run", "2")
    assert one["run"]["id"] == 2 and [r["labels"] for r in one["rounds"]] == [10, 20, 30]
    assert [r["selector"] for r in one["rounds"]] == ["random", "margin", "margin"]  # round 0: the seed selector
    assert sum(r["best"] for r in one["rounds"]) >= 1
    cost = _json("cost", *p)
    assert cost["total"]["calls"] == sum(r["calls"] for r in cost["rows"]) > 0
    plugins = _json("plugins")
    assert {"selector", "teacher", "student", "encoder"} <= set(plugins["kinds"])
    assert any(p["name"] == "static" for p in plugins["kinds"]["encoder"])
    audit = _json("audit", *p, "--top", "0")
    assert audit["judged"] == len(audit["suspects"]) > 20
    assert len(_json("audit", *p)["suspects"]) == 20  # --top's default holds for JSON too


@pytest.mark.parametrize("command", [["runs"], ["runs", "--run", "1"], ["cost"], ["status"], ["plugins"]])
def test_tables_keep_every_digit_at_80_columns_in_a_pipe(distilled: Path, command: list[str]):
    project = [] if command == ["plugins"] else ["-p", str(distilled)]
    shown = run_cli(*command, *project, env={"COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and max(map(len, shown.stdout.splitlines())) <= 80
    document = json.loads(cli(*command, *project, "--json").stdout)
    numbers = {f"{v:.3f}" for v in _floats(document) if 0 < v < 1} | {str(v) for v in _ints(document) if v > 9}
    flat = shown.stdout.replace("\n", " ")
    missing = [n for n in numbers if n in json.dumps(document) and n not in flat and _tabled(command, n, document)]
    assert missing == [], (missing, shown.stdout)


def _tabled(command: list[str], number: str, document: dict) -> bool:
    """Whether the table shows this figure at all (the JSON holds more than any table)."""
    if command == ["runs"]:
        return number in {f"{r['best']['test']['accuracy']:.3f}" for r in document["runs"]} | {
            str(r["labels"]) for r in document["runs"]}
    if command[:2] == ["runs", "--run"]:
        return number in {f"{r['val'].get(k, 0):.3f}" for r in document["rounds"] for k in ("accuracy", "log_loss")}
    if command == ["cost"]:
        return number in {str(r["calls"]) for r in document["rows"]}
    if command == ["status"]:
        return number in {str(s["documents"]) for s in document["documents"]["by_split"]}
    return False


def _floats(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _floats(v)]
    if isinstance(value, list):
        return [x for v in value for x in _floats(v)]
    return [value] if isinstance(value, float) else []


def _ints(value) -> list[int]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _ints(v)]
    if isinstance(value, list):
        return [x for v in value for x in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_runs_plot_draws_a_real_png_of_several_runs(distilled: Path, tmp_path: Path):
    from matplotlib import image

    out = tmp_path / "curve.png"
    result = cli("runs", "-p", str(distilled), "--plot", str(out), "--run", "1", "--run", "2")
    assert result.returncode == 0, result.stderr
    assert f"learning curves of runs 1, 2 written to {out}" in result.stdout
    pixels = image.imread(out)
    assert pixels.ndim == 3 and pixels.shape[0] >= 500 and pixels.shape[1] >= 800
    assert pixels[..., :3].std() > 0.05  # drawn on, not a blank canvas
    # Colour is used: the two runs' curves are not black and white.
    rgb = pixels[..., :3].reshape(-1, 3)
    assert (np.ptp(rgb, axis=1) > 0.3).mean() > 0.001
    for args, message in (([str(tmp_path / "c.gif")], "a plot is written as"), ([str(out), "--run", "9"], "no run 9")):
        bad = cli("runs", "-p", str(distilled), "--plot", *args)
        assert bad.returncode == 1 and message in bad.stderr and len(bad.stderr.splitlines()) <= 2, bad.stderr
    assert not (tmp_path / "c.gif").exists()


def test_a_target_needs_no_shell_metacharacter(distilled: Path, tmp_path: Path):
    DistillConfig(target="val.accuracy:0.9").validate()
    with pytest.raises(KdError, match=r"val\.accuracy:0\.95"):
        DistillConfig(target="val.accuracy=0.9").validate()
    with Project.open(fresh_copy(distilled, tmp_path)) as project:
        result = project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=10, budget_labels=60,
                                               val_limit=20, target="val.accuracy:0.01"))
    assert result.stop_reason.startswith("target reached: val.accuracy") and len(result.rounds) == 1


def test_the_round_line_counts_labels_as_the_budget_does_and_shows_what_picks_the_best(distilled: Path,
                                                                                      tmp_path: Path):
    copy = fresh_copy(distilled, tmp_path)
    result = cli("distill", "-p", str(copy), "--teacher", "oracle", "--seed-size", "10", "--batch", "10",
                 "--budget-labels", "20", "--val-size", "20")
    assert result.returncode == 0, result.stderr
    assert re.search(r"round   1  labels    20 .*loss \d\.\d{3}.*\*best \(lowest val loss\)|round   0  labels    10 "
                     r".*\*best \(lowest val loss\)", result.stdout), result.stdout
    assert "label budget reached (20/20)" in result.stdout
    assert re.search(r"best student: round \d \(id \d+\), the lowest validation loss \(\d\.\d{3}\), test accuracy "
                     r"\d\.\d{3}, 20 labels \(trained on 20\)", result.stdout), result.stdout


def test_predict_on_a_project_folder_suggests_exporting_beside_it(distilled: Path):
    result = cli("predict", str(distilled), "-", input_text="some text\n")
    assert result.returncode == 1
    assert "is a kdstudio project, not an exported model folder" in result.stderr
    assert f"--out {distilled.parent / 'bbc-model'}" in result.stderr


@pytest.mark.slow
def test_predictions_say_which_input_row_they_answer(exported: dict, tmp_path: Path):
    source = tmp_path / "in.csv"
    source.write_text('text\n"Rooney scores twice"\n"Shares fall"\n"New phone"\n', encoding="utf-8")
    from_file = run_cli("predict", str(exported["fp32"]), str(source))
    assert from_file.returncode == 0, from_file.stderr
    rows = from_file.stdout.splitlines()
    assert rows[0].startswith('"row","label"') and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    from_stdin = run_cli("predict", str(exported["fp32"]), "-", input_text="Rooney scores\n\nShares fall\n")
    assert [r.split(",")[0] for r in from_stdin.stdout.splitlines()] == ['"line"', "1", "3"]


# -- a paid run asks first, on a terminal ------------------------------------------------------------------------


def _in_a_terminal(args: list[str], answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdin and stdout; type `answer` when it asks."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "kdstudio", *args], stdin=child, stdout=child, stderr=child,
                               env=env, close_fds=True)
    os.close(child)
    seen, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(main, answer.encode() + b"\r")
                answered = True
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=10), seen.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)


@pytest.mark.slow
def test_a_paid_run_shows_its_plan_and_asks_before_spending(distilled: Path, tmp_path: Path):
    copy = fresh_copy(distilled, tmp_path)
    (tmp_path / "llm").mkdir()
    with FakeLLM(tmp_path / "llm") as llm:
        code, screen = _in_a_terminal(
            ["distill", "-p", str(copy), "--model", "openai/fake-model", "--api-base", llm.api_base, "--price-in",
             "1", "--price-out", "2", "--seed-size", "10", "--batch", "10", "--budget-labels", "20",
             "--val-size", "10"], answer="n")
        assert code == 1, screen
        for part in ("Plan for teacher openai/fake-model", "labels (20 training + 10 validation)",
                     "the teacher is ready", "Start the run and pay for these calls? [y/N]",
                     "the run was not started: nothing was sent", "--yes"):
            assert part in screen, (part, screen)
        assert llm.requests() == []
    with Project.open(copy, read_only=True) as project:
        assert len(project.runs()) == 2  # no run was started


def test_review_push_preview_lists_what_would_go_and_sends_nothing(distilled: Path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)  # a push would fail: a preview needs no server
    result = cli("review", "push", "-p", str(distilled), "--preview", "--filter", "all", "--limit", "3")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(len(r) == 4 for r in rows)
    assert "3 teacher labels would be sent; nothing was sent" in result.stderr
    with Project.open(distilled, read_only=True) as project:
        assert [x.doc_id for x in project.review_preview(filter="all", limit=3)] == [r[0] for r in rows]


def test_the_card_counts_people_s_labels_and_the_labels_reused_for_free(minilm_slice: Path, tmp_path: Path):
    copy = fresh_copy(minilm_slice, tmp_path)
    with Project.open(copy) as project:
        project.distill(DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector="random",
                                      seed_size=10, batch=10, budget_labels=30, val_limit=20))
        pool = project.store.ids_in_split("pool")
        gold = project.store.gold()
        for doc in pool[:10]:
            project.set_label(doc, gold[doc], annotator="ann")
        # The same teacher and seed as run 1: the documents run 1 bought are answered from the ledger, for free.
        result = project.distill(DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector="random",
                                               seed_size=10, batch=10, budget_labels=30, val_limit=20))
        reused = sum(r.reused for r in project.cost() if r.run_id == result.run_id)
        paid = sum(r.calls for r in project.cost() if r.run_id == result.run_id)
        trained = project.load_student()[1]["metrics"]["trained_on"]
    assert reused > 0 and trained["by_source"].get("human") == 10
    out = run_cli("export", "-p", str(copy), "--out", str(tmp_path / "model"))
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    total = sum(trained["by_label"].values())
    assert f"{total} labels: {trained['by_source'].get('teacher', 0)} from the teacher, 10 from people" in card
    assert f"teacher calls paid: {paid}," in card and f"at no cost: {reused}" in card
