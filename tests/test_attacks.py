"""The second round of attacks, on vectors that cost nothing (the test encoder) and the command line in process:
students used after an encoder switch, damaged student files, composite option strings, data that holds terminal
escapes, USD caps that cannot buy a call, resumes that change the teacher, audits by run and teacher, read-only
projects, reserved labels, option values out of bounds, and hand-edited cascade descriptions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CliResult, cheap_slice, cli, fresh_copy, run_cli, write

from kdstudio.config import Label
from kdstudio.errors import KdError, StaleStudent
from kdstudio.loop import DistillConfig, resume_config
from kdstudio.project import Project
from kdstudio.runtime import BadModelFolder, Cascade
from kdstudio.terminal import shown

RAW = ("\x1b[31m", "\x1b]0;pwned\x07", "\u202e")


def one_error(result: CliResult, *pieces: str) -> None:
    """One `Error:` line (and its `Fix:`), a non-zero exit, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr, result.exception)
    assert result.exception is None, result.exception
    assert result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1, result.stderr
    for piece in pieces:
        assert piece in result.stderr, result.stderr


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("attacks") / "bbc", limit=150, seed=7)


@pytest.fixture(scope="module")
def distilled(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = fresh_copy(embedded, tmp_path_factory.mktemp("distilled"))
    with Project.open(directory) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=10, budget_labels=40, val_limit=10))
    return directory


@pytest.fixture
def bbc(distilled: Path, tmp_path: Path) -> Path:
    return fresh_copy(distilled, tmp_path)


# -- a saved student and the vectors it learned from ----------------------------------------------------------


def test_every_use_of_a_student_after_an_encoder_switch_is_one_clear_answer(bbc: Path):
    with Project.open(bbc) as project:
        project.embed(encoder="hashed", encoder_options={"dims": 512})  # the project's vectors change
        with pytest.raises(StaleStudent, match="learned from hashed-2048 vectors; the project now embeds with "
                                               "hashed-512"):
            project.load_student()
        queue = project.triage_queue("uncertainty")  # the queue stands, without the student's opinion
        assert queue and all(item.student_label is None for item in queue)
        with pytest.raises(StaleStudent):
            project.triage_queue("disagreement")
    one_error(cli("review", "push", "-p", str(bbc), "--filter", "disagreement", "--preview"),
              "learned from hashed-2048 vectors", "Fix: distill again")
    one_error(cli("export", "-p", str(bbc), "--out", str(bbc.parent / "m")), "learned from hashed-2048 vectors")


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda d: (d / "estimator.skops").write_bytes(b""), "are damaged (BadZipFile"),
    (lambda d: (d / "estimator.skops").write_bytes((d / "estimator.skops").read_bytes()[:100]), "are damaged"),
    (lambda d: (d / "student.json").write_text("{broken"), "damaged (JSONDecodeError"),
    (lambda d: (d / "student.json").write_text(json.dumps({"student": "logreg"})), "damaged (KeyError"),
])
def test_a_damaged_student_is_one_error_line(bbc: Path, damage, expected: str):
    with Project.open(bbc) as project:
        _, record = project.load_student()
    damage(Path(record["path"]))
    one_error(cli("export", "-p", str(bbc), "--out", str(bbc.parent / "m")), expected)
    one_error(cli("review", "push", "-p", str(bbc), "--filter", "disagreement", "--preview"), expected)


# -- option strings of teachers made of teachers -------------------------------------------------------------


@pytest.mark.parametrize("options", [
    ["--teacher", "committee", "--teacher-option", "members=zeroshot; oracle", "--teacher-option", "escalate="],
    ["--teacher", "committee", "--teacher-option", "members=zeroshot; oracle", "--teacher-option", "escalate=;"],
    ["--teacher", "cascade", "--teacher-option", "first=;", "--teacher-option", "then=oracle"],
    ["--teacher", "committee", "--teacher-option", 'members=llm model="openai/x; zeroshot'],
    ["--teacher", "committee", "--teacher-option", "members=zeroshot; oracle =1"],
    ["--teacher", "cascade", "--teacher-option", "first=zeroshot; oracle", "--teacher-option", "then=oracle"],
    ["--teacher", "cascade", "--teacher-option", "first=zeroshot", "--teacher-option", "then=oracle",
     "--teacher-option", "below=nan"],
])
def test_bad_composite_options_are_one_error_line(bbc: Path, options: list[str]):
    before = _dump(bbc)
    one_error(cli("distill", "-p", str(bbc), *options, "--budget-labels", "20"))
    assert _dump(bbc) == before


def _dump(directory: Path) -> dict:
    with Project.open(directory) as project:
        return project.store.dump()


# -- data is shown, never acted on ------------------------------------------------------------------------------


def test_escapes_in_documents_and_labels_reach_no_terminal_raw(embedded: Path, tmp_path: Path):
    directory = fresh_copy(embedded, tmp_path)
    hostile = "Markets " + "".join(RAW) + " rally [bold]as[/] banks gain"
    with Project.open(directory) as project:
        project.store.con.execute("UPDATE documents SET text = ? || text WHERE id IN (SELECT id FROM documents "
                                  "WHERE split = 'pool' ORDER BY id LIMIT 40)", [hostile])
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=10, budget_labels=40, val_limit=10))
    outputs = [cli("audit", "-p", str(directory), "--top", "40"),
               cli("review", "push", "-p", str(directory), "--preview", "--filter", "all"),
               cli("audit", "-p", str(directory), "--json", "--top", "5")]
    for result in outputs:
        assert result.returncode == 0, (result.stdout, result.stderr)
        for raw in RAW:
            assert raw not in result.stdout + result.stderr, (raw, result.stdout[:2000])
        assert "\x07" not in result.stdout and "\x1b" not in result.stdout
    assert "\\x1b[31m" in outputs[0].stdout and "\\u202e" in outputs[1].stdout
    assert json.loads(outputs[2].stdout)["suspects"]  # JSON stays JSON, with the escapes JSON writes
    assert shown("a\x1bb\u202ec\td\ne\x9b") == "a\\x1bb\\u202ec\td\ne\\x9b"


def test_an_error_that_quotes_data_shows_it_escaped(tmp_path: Path):
    result = cli("status", "-p", str(tmp_path / "\x1b]0;pwned\x07\u202e"))
    assert result.returncode == 1 and "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert "\\x1b]0;pwned\\x07\\u202e is not a kdstudio project" in result.stderr


# -- money said as it is ----------------------------------------------------------------------------------------


def llm(bbc: Path, *extra: str) -> list[str]:
    """An LLM teacher at a local address nothing listens on: nothing here may send a request."""
    return ["distill", "-p", str(bbc), "--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1",
            "--price-in", "1", "--price-out", "2", *extra]


@pytest.mark.slow  # litellm
def test_a_usd_cap_that_cannot_buy_one_call_is_refused_before_the_run(bbc: Path):
    before = _dump(bbc)
    one_error(cli(*llm(bbc, "--budget-usd", "0.0001")), "budget_usd $0.0001 cannot buy a single teacher call",
              "reserves at least", "Fix: give budget_usd at least")
    assert _dump(bbc) == before  # no run was even created


@pytest.mark.slow  # litellm
def test_a_plan_says_estimate_and_bound_and_where_the_key_comes_from(bbc: Path):
    result = cli(*llm(bbc, "--plan"))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "USD estimate" in result.stdout and "USD at most" in result.stdout
    assert "placeholder key" in result.stdout and "key is in the environment" not in result.stdout
    with Project.open(bbc) as project:
        plan = project.plan(project.distill_config({"teacher": "llm", "teacher_options": {
            "model": "openai/fake", "api_base": "http://127.0.0.1:9/v1", "price_in": "1", "price_out": "2"}}))
    assert plan.bound_usd > plan.usd > 0


def test_a_resume_merges_teacher_options_and_refuses_another_model():
    saved = {**DistillConfig(teacher="llm", teacher_options={"model": "openai/a", "price_in": "1",
                                                             "api_base": "http://old/v1"}).__dict__}
    config, applied = resume_config(3, saved, {"teacher_options": {"api_base": "http://new/v1"}})
    assert config.teacher_options == {"model": "openai/a", "price_in": "1", "api_base": "http://new/v1"}
    assert applied and "http://new/v1" in applied[0]
    with pytest.raises(KdError, match="taught by model 'openai/a'; a resume cannot switch to 'openai/b'"):
        resume_config(3, saved, {"teacher_options": {"model": "openai/b"}})


# -- smaller promises --------------------------------------------------------------------------------------------


def test_audit_by_run_and_by_teacher_and_top_in_json(bbc: Path):
    with Project.open(bbc) as project:
        project.distill(DistillConfig(teacher="oracle", teacher_options={"noise": 0.3}, seed_size=10, batch=10,
                                      budget_labels=30, val_limit=10, seed=4))
    top = json.loads(cli("audit", "-p", str(bbc), "--json", "--top", "3").stdout)
    assert len(top["suspects"]) == 3
    first = json.loads(cli("audit", "-p", str(bbc), "--json", "--run", "1", "--top", "0").stdout)
    second = json.loads(cli("audit", "-p", str(bbc), "--json", "--run", "2", "--top", "0").stdout)
    assert first["judged"] != second["judged"] or first["suspects"] != second["suspects"]
    noisy = json.loads(cli("audit", "-p", str(bbc), "--json", "--teacher", "oracle(simulated, noise=0.3)",
                           "--top", "0").stdout)
    assert noisy["judged"] == second["judged"]
    one_error(cli("audit", "-p", str(bbc), "--teacher", "gpt-9"), "from teacher 'gpt-9'", "teachers that answered")
    one_error(cli("audit", "-p", str(bbc), "--run", "99"), "there is no run 99")


def test_a_label_named_defer_is_refused(tmp_path: Path):
    one_error(cli("init", str(tmp_path / "p"), "--labels", "spam,defer"), "'defer' cannot be a label")
    assert not (tmp_path / "p" / "kdstudio.duckdb").exists()
    with pytest.raises(KdError, match="cannot be a label"):
        Project.init(tmp_path / "q", [Label("ok"), Label("Defer")])


@pytest.mark.parametrize(("flags", "expected"), [
    (["--free-labels", "self-train", "--free-labels-option", "precision=7"], "precision: 7.0 is outside [0, 1]"),
    (["--selector", "mraru", "--selector-option", "temperature=nan"], "is not a finite number"),
    (["--budget-usd", "nan"], "--budget-usd: budget_usd = nan is not a finite number"),
    (["--budget-labels", "-5"], "--budget-labels: budget_labels = -5 is outside >= 0"),
    (["--batch", "ten"], "--batch: batch = 'ten' is not a whole number"),
    (["--val-size", "-1"], "val_limit = -1 is outside >= 0"),
    (["--student-option", "C=0"], "option C: 0.0 is outside >= 1e-09"),
])
def test_option_values_are_checked_by_their_declarations(bbc: Path, flags: list[str], expected: str):
    one_error(cli("distill", "-p", str(bbc), "--teacher", "oracle", *flags), expected)


def test_a_kdstudio_toml_setting_out_of_bounds_is_refused_by_name(bbc: Path):
    text = (bbc / "kdstudio.toml").read_text()
    (bbc / "kdstudio.toml").write_text(text + "\n[distill]\nbatch = -3\n")
    one_error(cli("distill", "-p", str(bbc), "--teacher", "oracle"), "[distill] in kdstudio.toml: batch = -3 is "
                                                                    "outside >= 0")


@pytest.mark.parametrize("spec", [
    {"tiers": [{"folder": "fast", "answers_at_or_above": float("nan")}, {"folder": "slow"}]},
    {"tiers": [{"folder": "fast", "answers_at_or_above": 0.7}, {"folder": "slow"}], "defer_below": "0.5"},
    {"tiers": [{"folder": "fast", "answers_at_or_above": True}, {"folder": "slow"}]},
    {"tiers": [{"folder": "fast", "answers_at_or_above": 1.5}, {"folder": "slow"}]},
    {"tiers": [{"folder": "../x", "answers_at_or_above": 0.5}, {"folder": "slow"}]},
])
def test_a_hand_edited_cascade_description_is_refused(tmp_path: Path, spec: dict):
    (tmp_path / "cascade.json").write_text(json.dumps(spec))
    with pytest.raises(BadModelFolder, match="is not a kdstudio cascade description"):
        Cascade(tmp_path)


def test_the_distill_tab_takes_its_model_and_api_base_from_the_project(bbc: Path):
    from kdstudio.tui.app import KdStudioApp

    text = (bbc / "kdstudio.toml").read_text()
    (bbc / "kdstudio.toml").write_text(text + '\n[distill]\nteacher = "llm"\nbudget_labels = 60\n'
                                              'teacher_options = { model = "openai/house", api_base = '
                                              '"http://127.0.0.1:9/v1", price_in = 1 }\n')

    async def scenario() -> None:
        with Project.open(bbc) as project:
            app = KdStudioApp(project, "tester")
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("f5")
                await pilot.pause()
                from textual.widgets import Input

                assert app.query_one("#model", Input).value == "openai/house"
                assert app.query_one("#api_base", Input).value == "http://127.0.0.1:9/v1"
                assert app.query_one("#budget_labels", Input).value == "60"
                pane = app.query_one("#distill-pane")
                config = pane._config()
                assert config.teacher_options == {"model": "openai/house", "api_base": "http://127.0.0.1:9/v1",
                                                  "price_in": 1}

    import asyncio

    asyncio.run(scenario())


def test_a_read_only_project_reads_and_refuses_to_write(embedded: Path, tmp_path: Path):
    """A read-only file system under the project (root ignores permission bits, so a bind mount makes it real)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a read-only view of the project")
    source = fresh_copy(embedded, tmp_path / "rw")
    view = tmp_path / "ro"
    view.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(view)], capture_output=True).returncode:
        pytest.skip("this machine does not allow bind mounts")
    try:
        for command in (["status"], ["runs"], ["cost"], ["status", "--json"]):
            result = run_cli(*command, "-p", str(view))
            assert result.returncode == 0, (command, result.stderr)
        refused = run_cli("embed", "-p", str(view))
        assert refused.returncode == 1 and refused.stderr.startswith("Error: the project in ") \
            and "is read-only, and this command writes to it" in refused.stderr, refused.stderr
        assert "not a readable kdstudio database" not in refused.stderr
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_a_predict_input_that_cannot_be_read_is_one_line(tmp_path: Path):
    from kdstudio.predict_io import read_documents

    long_line = write(tmp_path / "long.csv", "text\n" + "word " * 2_200_000 + "\n")
    assert len(read_documents(str(long_line)).texts[0]) > 10_000_000
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(KdError, match="is a folder, not a csv file"):
        read_documents(str(tmp_path / "folder.csv"))
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("text\nhello\n".encode("utf-16"))
    with pytest.raises(KdError) as info:
        read_documents(str(utf16))
    assert "is not UTF-8 text" in info.value.message and "\x00" not in info.value.message
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [["a", "b"], ["c"]]}), tmp_path / "list.parquet")
    with pytest.raises(KdError, match=r"holds list<.*> values, not text"):
        read_documents(str(tmp_path / "list.parquet"))
    write(tmp_path / "empty.csv", "text\n")
    with pytest.raises(KdError, match="holds no rows"):
        read_documents(str(tmp_path / "empty.csv"))


@pytest.mark.parametrize(("stdin", "expected"), [
    (b"ok\nbad \xff\xfe\n", "standard input line 2 is not UTF-8 text"),
    (b"\n  \n\n", "standard input holds no text"),
])
def test_standard_input_that_cannot_be_read_is_refused(monkeypatch: pytest.MonkeyPatch, stdin: bytes,
                                                       expected: str):
    import io

    from kdstudio.predict_io import read_documents

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8",
                                                       errors="surrogateescape"))
    with pytest.raises(KdError, match=expected):
        read_documents("-")
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(KdError, match="standard input is closed"):
        read_documents("-")


def test_the_triage_tab_after_an_encoder_switch_shows_the_queue_without_the_student(bbc: Path):
    import asyncio

    from kdstudio.tui.app import KdStudioApp

    with Project.open(bbc) as project:
        project.embed(encoder="hashed", encoder_options={"dims": 512})

    async def scenario() -> None:
        with Project.open(bbc) as project:
            app = KdStudioApp(project, "tester")
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("f4")
                await pilot.pause()
                pane = app.query_one("#triage-pane")
                assert pane.queue and pane.queue[0].student_label is None
                await pilot.press("o")  # the disagreement order needs the student: said, and passed over
                await pilot.pause()
                assert pane.order != "disagreement" and app.return_code is None

    asyncio.run(scenario())


def test_a_teacher_at_chance_is_told_so_with_the_fix():
    from kdstudio.interfaces import Doc, TeachContext, Teacher, TeacherLabel
    from kdstudio.teacher_check import check

    class Guesser(Teacher):
        name = "guesser"

        def label(self, docs, context):
            for i, doc in enumerate(docs):
                yield TeacherLabel(doc.id, context.labels[i % 3], 0.34)

    labels = ["neg", "neu", "pos"]
    docs = [Doc(f"d{i}", f"text {i}") for i in range(90)]
    gold = {d.id: labels[(i * 7 // 3) % 3] for i, d in enumerate(docs)}
    verdict = check(Guesser(), TeachContext(labels), labels, docs, {d.id for d in docs}, {}, gold)
    said = " ".join(verdict.warnings)
    assert "it is guessing" in said and "Fix: give each label a description" in said and "another teacher" in said
    # The same evidence refuses it before a run buys a label: its interval reaches what a guess gets.
    assert verdict.guessing and "cannot be told from guessing" in verdict.guessing and "of the gold labels" in \
        verdict.guessing


def test_cards_show_data_escaped_and_a_cascade_card_has_hub_metadata():
    from kdstudio.cascade import CascadeReport, TierShare, few_val_warning, render_cascade_card
    from kdstudio.modelcard import _code, _md

    assert "\x1b" not in _md("evil\x1b]0;x\x07") and "\\x1b" in _md("evil\x1b]0;x\x07")
    assert "\u202e" not in _code("a\u202eb")
    assert few_val_warning(150, 0.9) == [] and "only 26 validation documents" in few_val_warning(26, 0.9)[0]
    report = CascadeReport(Path("x"), 0.8, 0.9, 0.91, 0.92, 26, 40, 0.9, 0.91,
                           [TierShare("fast", "static", 0.7, 0.95), TierShare("slow", "minilm", 0.3, 0.8)], None,
                           None, few_val_warning(26, 0.91))
    card = render_cascade_card(report, [], {"project": "p", "license": "mit", "language": ["en"]})
    assert card.startswith("---\nlicense: \"mit\"") and "- \"cascade\"" in card and "value: 0.9000" in card
    assert "Warning: the threshold was chosen on only 26" in card
