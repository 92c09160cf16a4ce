"""The terminal UI, driven by Textual's pilot (state checked in DuckDB after key presses), compared with text
snapshots of its main screens, and typed at in tmux as a person would."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cheap_slice, fresh_copy, write

from kdstudio.config import Label
from kdstudio.interfaces import Doc, TeachContext
from kdstudio.plugins import get_plugins
from kdstudio.project import Filters, Project
from kdstudio.store import ImportOptions, Ledger
from kdstudio.teaching import TeacherRunner
from kdstudio.tui.app import KdStudioApp

LABELS = ["sports", "politics", "tech"]
SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (80, 24)


@pytest.fixture(autouse=True)
def no_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots of settled screens: a tab's underline slides when tabs switch, and a screenshot could catch it
    halfway."""
    import textual.constants

    monkeypatch.setattr(textual.constants, "TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("KDSTUDIO_ANNOTATOR", "tester")  # not whoever runs the tests


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """Twelve documents labelled by the simulated teacher with noise."""
    directory = tmp_path / "p"
    rows = ["id,text,label"] + [f"d{i:02d},news item {i} about {LABELS[i % 3]},{LABELS[i % 3]}" for i in range(12)]
    with Project.init(directory, [Label(x) for x in LABELS], name="tui-test") as project:
        project.import_file(write(tmp_path / "docs.csv", "\n".join(rows) + "\n"),
                            ImportOptions(id_column="id", label_column="label", split={"test": 0.25}))
        gold = project.store.gold()
        ids = project.store.ids_in_split("pool")
        teacher = get_plugins().get("teacher", "oracle").cls(noise=0.4, seed=3)
        TeacherRunner(Ledger(project.store), teacher, TeachContext(LABELS, gold=gold), None).label(
            [Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)])
    return directory


def human_labels(project: Project) -> list[tuple[str, str]]:
    return project.store.con.execute(
        "SELECT doc_id, label FROM labels WHERE source = 'human' ORDER BY id").fetchall()


def screen_text(app: KdStudioApp, project_dir: Path) -> str:
    """The visible characters of the app's screen, row by row, from its SVG screenshot."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, text in re.findall(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(y), []).append((float(x), html.unescape(text).replace("\xa0", " ")))
    lines = ["".join(t for _, t in sorted(parts)).rstrip() for _, parts in sorted(rows.items())]
    # The labelling rate depends on how fast the test ran: the figure is left out of the comparison.
    return re.sub(r"\d+\.\d/min", "N/min", "\n".join(lines).replace(str(project_dir.resolve()), "<project>"))


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("KDSTUDIO_UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not os.environ.get("KDSTUDIO_UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {path.name} was missing and has been written: check it and commit it")
    assert text == path.read_text(encoding="utf-8"), f"{name}: the screen differs from tests/snapshots/{name}.txt"


@pytest.mark.asyncio
async def test_triage_keys_are_persisted_at_once_and_undone(project_dir: Path):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            await pilot.pause()
            triage = app.query_one("#triage-pane")
            queue = list(triage.queue)
            assert [x.confidence for x in queue] == sorted(x.confidence for x in queue)  # least certain first
            await pilot.press("2")  # politics
            assert human_labels(project) == [(queue[0].doc_id, "politics")]
            await pilot.press("enter")  # accept the teacher
            assert human_labels(project)[-1] == (queue[1].doc_id, queue[1].teacher_label)
            await pilot.press("s")  # skip: no label written (the ignore is recorded apart)
            assert len(human_labels(project)) == 2
            await pilot.press("u")  # undo the skip
            await pilot.press("u")  # undo the accept
            assert human_labels(project) == [(queue[0].doc_id, "politics")]
            await pilot.press("3")
            assert human_labels(project)[-1] == (queue[1].doc_id, "tech")
            await pilot.pause()
            check_snapshot("triage", screen_text(app, project_dir))


@pytest.mark.asyncio
async def test_triage_scrolls_a_long_document_records_ignores_and_prompts_after_a_reject(project_dir: Path):
    with Project.open(project_dir) as project:
        first = project.triage_queue()[0].doc_id
        project.store.con.execute("UPDATE documents SET text = ? WHERE id = ?",
                                  ["\n".join(f"paragraph {i} of a long article \x1b[31m" for i in range(80)), first])
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            await pilot.pause()
            scroll = app.query_one("#triage-scroll")
            assert scroll.max_scroll_y > 0 and scroll.scroll_y == 0
            await pilot.press("pagedown")
            await pilot.pause()
            assert scroll.scroll_y > 0  # the article scrolls under the keys
            assert "\\x1b[31m" in screen_text(app, project_dir)  # shown, never sent to the terminal
            await pilot.press("x")
            await pilot.pause()
            assert "rejected: which label is right? Press its key" in screen_text(app, project_dir)
            await pilot.press("i")  # ignore: recorded, with the annotator
            ignored = project.store.con.execute("SELECT doc_id, annotator FROM ignored").fetchall()
            assert ignored == [(first, "tester")]
            await pilot.press("u")
            assert project.store.con.execute("SELECT count(*) FROM ignored").fetchall()[0][0] == 0
            await pilot.press("i")
            await pilot.press("f3")
            await pilot.press("f4")  # a fresh queue: the ignored document has left it
            await pilot.pause()
            assert first not in [x.doc_id for x in app.query_one("#triage-pane").queue]


@pytest.mark.asyncio
async def test_corpus_pages_and_filters_through_the_facade(project_dir: Path):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            await pilot.pause()
            corpus = app.query_one("#corpus-pane")
            corpus.PAGE = 5
            corpus.load()
            status = app.query_one("#corpus-status")
            assert "1-5 of 12 documents" in str(status.render())
            await pilot.press("n")
            assert "6-10 of 12" in str(status.render())
            await pilot.press("n")
            await pilot.press("n")  # past the end: stays
            assert "11-12 of 12" in str(status.render())
            app.query_one("#search").value = "item 1"
            await pilot.click("#search")
            await pilot.press("enter")
            await pilot.pause()
            assert "of 3 documents" in str(status.render())  # items 1, 10, 11
            await pilot.pause()
            check_snapshot("corpus", screen_text(app, project_dir))


@pytest.mark.asyncio
async def test_dashboard_and_help(project_dir: Path):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            stats = str(app.query_one("#dashboard-stats").render())
            assert "12 documents" in stats and "teacher 9" in stats
            check_snapshot("dashboard", screen_text(app, project_dir))
            await pilot.press("f1")
            await pilot.pause()
            shown = screen_text(app, project_dir)
            assert "Triage" in shown and "x reject the teacher's" in shown and "F10 cancel" in shown
            await pilot.press("escape")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_run_started_and_cancelled_from_the_distill_tab_is_resumable(minilm_slice: Path, tmp_path: Path):
    directory = fresh_copy(minilm_slice, tmp_path / "project")  # real vectors: the tab exports what it distilled
    with Project.open(directory) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f5")
            await pilot.pause()
            app.query_one("#teacher").value = "oracle"
            app.query_one("#batch").value = "1"  # many short rounds: the cancel lands mid-run
            app.query_one("#budget_labels").value = "1000"
            app.query_one("#budget_labels").focus()  # the keys work from inside a box
            await pilot.press("f8")
            log = app.query_one("#distill-log")
            deadline = time.time() + 60
            while not any("round   1" in line.text for line in log.lines) and time.time() < deadline:
                await pilot.pause(0.1)
            await pilot.press("f10")
            while app.query_one("#distill-pane").running and time.time() < deadline:
                await pilot.pause(0.1)
            assert not app.query_one("#distill-pane").running and app.query_one("#cancel").disabled
            # At 80 columns every round line wraps inside the log, none is cut under its scrollbar.
            width = log.scrollable_content_region.width
            assert log.lines and all(len(line.text.rstrip()) <= width for line in log.lines)
            assert "*best (lowest val loss)" in " ".join(line.text.strip() for line in log.lines)
        run = project.latest_run()
        assert run.status == "cancelled" and run.config["teacher"] == "oracle"
        # A few rounds more finish it (a round of one label at a time up to 1,000 would take a minute).
        resumed = project.distill(resume=run.id, overrides={"max_rounds": len(project.rounds(run.id)) + 3})
        assert resumed.status == "finished" and len(resumed.rounds) > 1

        app = KdStudioApp(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f7")
            await pilot.pause()
            assert app.query_one("#student-choice").value == resumed.student_id
            app.query_one("#out").value = str(tmp_path / "model")
            app.query_one("#do-export").focus()  # as a person tabs to the button
            await pilot.press("enter")
            await pilot.pause()
            deadline = time.time() + 120
            while app.busy() and time.time() < deadline:
                await pilot.pause(0.2)
            await pilot.pause()
            card = app.query_one("#card")._markdown
            assert "## Teacher and cost" in card and "building the ONNX graph" in card
            assert "checking the exported model against the in-process student" in card
        assert (tmp_path / "model" / "model.onnx").is_file()


def slice_with_defaults(base: Path, limit: int, seed: int, distill: str) -> Path:
    """A cheap bbc-news slice whose kdstudio.toml holds `distill` (TOML lines) as its [distill] table."""
    directory = cheap_slice(base / "bbc", limit=limit, seed=seed)
    toml = directory / "kdstudio.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[distill]\n" + distill, encoding="utf-8")
    return directory


@pytest.mark.asyncio
async def test_triage_keys_while_a_distill_worker_writes(tmp_path_factory):
    # The project's own defaults: a slow simulated teacher, so that the run is still writing while keys are pressed.
    directory = slice_with_defaults(tmp_path_factory.mktemp("tui-busy"), 120, 6, 'teacher = "oracle"\nbatch = 5\n'
                                    'budget_labels = 80\nval_limit = 10\nteacher_options = { delay = 0.05 }\n')
    with Project.open(directory) as project:
        project.distill(project.distill_config({"teacher_options": {}, "budget_labels": 30}))
        app = KdStudioApp(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f5")
            await pilot.pause()
            assert app.query_one("#teacher").value == "oracle" and app.query_one("#batch").value == "5"
            await pilot.click("#start")
            log = app.query_one("#distill-log")
            deadline = time.time() + 90
            while not any("round   1" in line.text for line in log.lines) and time.time() < deadline:
                await pilot.pause(0.1)
            await pilot.press("f4")  # reads through the app's cursor while the worker writes through its own
            await pilot.pause()
            triage = app.query_one("#triage-pane")
            assert app.busy() and triage.queue
            await pilot.press("s")  # an ignore is recorded, so it writes: refused until the run ends
            assert triage.at == 0
            await pilot.press("1")  # so would a label
            assert triage.at == 0 and human_labels(project) == []
            assert project.store.con.execute("SELECT count(*) FROM ignored").fetchall()[0][0] == 0
            await pilot.press("f5")
            await pilot.click("#cancel")
            while app.query_one("#distill-pane").running and time.time() < deadline:
                await pilot.pause(0.1)
            assert not app.busy()
            await pilot.press("f4")
            await pilot.pause()
            first = app.query_one("#triage-pane").queue[0]
            await pilot.press("1")
            assert human_labels(project) == [(first.doc_id, project.labels[0])]
        run = project.latest_run()
        assert run.status == "cancelled" and run.config["teacher_options"] == {"delay": 0.05}


@pytest.mark.asyncio
async def test_the_distill_form_starts_a_run_whose_training_the_data_chooses(tmp_path_factory):
    # A teacher wrong on every answer, its second choice too: the run ends on a student no better than a guess.
    directory = slice_with_defaults(tmp_path_factory.mktemp("tui-auto"), 200, 8, 'teacher = "oracle"\n'
                                    'budget_labels = 80\nbatch = 20\nseed_size = 20\naccept_guessing_teacher = true\n'
                                    'teacher_options = { noise = 1.0, runner_up_right = 0.0 }\n')
    with Project.open(directory) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f5")
            await pilot.pause()
            method = app.query_one("#method")
            assert method.value == "fixed"
            method.value = "auto"
            await pilot.click("#start")
            deadline = time.time() + 60
            while time.time() < deadline and (app.query_one("#distill-pane").running or not project.runs()):
                await pilot.pause(0.1)
            text = " ".join(" ".join(line.text.split()) for line in app.query_one("#distill-log").lines)
            await pilot.press("f2")  # the Dashboard's figures say it too
            await pilot.pause()
            stats = " ".join(str(app.query_one("#dashboard-stats").render()).split())
        run = project.latest_run()
        assert run.status == "finished" and run.config["method"] == "auto", text
        assert "auto:" in text and "gold" in text, text
        assert "warning: the kept student cannot be told from a guess on" in text, text
        assert f"warning: run {run.id}: the kept student cannot be told from a guess on" in stats, stats


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_person_types_in_tmux(project_dir: Path):
    session = f"kdstudio-test-{os.getpid()}"
    command = f"{sys.executable} -m kdstudio tui -p {project_dir} --annotator carol"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 30) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen()}")

    try:
        wait_for("Dashboard")
        wait_for("12 documents")
        subprocess.run(["tmux", "send-keys", "-t", session, "F4"], check=True)
        first = wait_for("1/9")
        assert "teacher:" in first
        subprocess.run(["tmux", "send-keys", "-t", session, "1"], check=True)
        wait_for("2/9")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.time() + 20
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.time() < deadline, "the app did not quit on q"
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    with Project.open(project_dir, read_only=True) as project:
        assert [(label, who) for _, label, who in annotated(project)] == [("sports", "carol")]


@pytest.mark.asyncio
async def test_review_tab_shows_its_state_previews_before_pushing_and_reports_errors_whole(
        project_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    with Project.open(project_dir) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f6")
            await pilot.pause()
            log = app.query_one("#review-log")

            def logged() -> str:
                return " ".join(line.text.strip() for line in log.lines)

            assert "review: 9 teacher labels unchecked (" in logged() and "0 documents labelled by people" in logged()
            app.query_one("#filter").value = "all"
            app.query_one("#limit").value = "3"
            await pilot.press("f9")  # nothing previewed: nothing pushed
            await pilot.pause()
            assert app.query_one("#push").disabled
            await pilot.press("f8")
            await pilot.pause()
            assert "3 teacher labels would be pushed (all, at most 3)" in logged()
            assert not app.query_one("#push").disabled
            app.query_one("#limit").value = "2"  # a changed setting needs a new preview
            await pilot.pause()
            assert app.query_one("#push").disabled
            await pilot.press("f8")
            await pilot.press("f9")
            await pilot.pause()
            assert "LABEL_STUDIO_URL is not set" in logged()
            await pilot.press("f10")
            await pilot.pause()
            # At 80 columns the fix line is whole: wrapped inside the log, never cut under its scrollbar.
            assert "fix: export LABEL_STUDIO_URL=" in logged()
            assert all(len(line.text.rstrip()) <= log.scrollable_content_region.width for line in log.lines)
            check_snapshot("review-after-actions-80x24", screen_text(app, project_dir))


def test_documents_pages_with_every_filter(project_dir: Path):
    with Project.open(project_dir) as project:
        teacher = {d: (label, conf) for d, label, conf in project.store.con.execute(
            "SELECT doc_id, label, confidence FROM labels WHERE source = 'teacher'").fetchall()}
        doc = sorted(teacher)[0]
        project.set_label(doc, "tech")
        everything = project.documents(size=100)
        assert everything.total == 12 and [r.id for r in everything.rows] == sorted(r.id for r in everything.rows)
        pages = [project.documents(offset=o, size=5).rows for o in (0, 5, 10)]
        assert [r.id for page in pages for r in page] == [r.id for r in everything.rows]
        current = {r.id: r for r in everything.rows}
        assert current[doc].label == "tech" and current[doc].label_source == "human"  # the person's label wins

        def ids(**filters) -> set[str]:
            return {r.id for r in project.documents(Filters(**filters), size=100).rows}

        assert ids(label_source="none") == {d for d in current if d not in teacher}
        assert ids(label_source="human") == {doc}
        assert ids(label_source="teacher") == set(teacher) - {doc}
        assert ids(label="tech") == {d for d, r in current.items() if r.label == "tech"}
        assert ids(max_confidence=0.6) == {d for d, (_, c) in teacher.items() if d != doc and c <= 0.6}
        assert ids(min_confidence=0.99) == {doc} | {d for d, (_, c) in teacher.items() if c >= 0.99}
        assert ids(split="test") == set(project.store.ids_in_split("test"))
        assert ids(search="ITEM 1") == {"d01", "d10", "d11"}  # case-insensitive
        assert project.documents(Filters(search="nothing like this")).total == 0


def annotated(project: Project) -> list[tuple[str, str, str]]:
    return project.store.con.execute(
        "SELECT doc_id, label, annotator FROM labels WHERE source = 'human' ORDER BY id").fetchall()


@pytest.mark.asyncio
async def test_triage_accepts_rejects_ignores_and_counts_the_session(project_dir: Path):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project, annotator="alice")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            await pilot.pause()
            triage = app.query_one("#triage-pane")
            queue = list(triage.queue)
            await pilot.press("a")  # accept the teacher's label
            assert annotated(project) == [(queue[0].doc_id, queue[0].teacher_label, "alice")]
            saved = str(app.query_one("#triage-saved").render())
            assert f"saved {queue[0].doc_id} = {queue[0].teacher_label}  (the teacher's label), by alice" in saved
            await pilot.press("x")  # reject: the teacher's own key is refused, another one is saved
            teacher_key = next(k for k, v in triage.keys.items() if v == queue[1].teacher_label)
            await pilot.press(teacher_key)
            assert len(annotated(project)) == 1 and triage.at == 1
            other_key, other = next((k, v) for k, v in triage.keys.items() if v != queue[1].teacher_label)
            await pilot.press(other_key)
            assert annotated(project)[-1] == (queue[1].doc_id, other, "alice")
            await pilot.press("i")  # ignore: nothing saved
            assert len(annotated(project)) == 2 and triage.at == 3
            stats = str(app.query_one("#triage-saved").render())
            assert "ignored" in stats and "this session: 2 labelled" in stats and "teacher agreed 1/2" in stats
            assert "6 left in the queue; labelling as alice" in stats
            await pilot.press("u", "u")  # the ignore, then the rejection's label
            assert len(annotated(project)) == 1 and "this session: 1 labelled" in str(
                app.query_one("#triage-saved").render())
            await pilot.pause()
            check_snapshot("triage-after-actions-80x24", screen_text(app, project_dir))


@pytest.mark.asyncio
async def test_a_fresh_project_is_labelled_from_scratch_and_an_empty_queue_says_what_to_do(tmp_path: Path,
                                                                                          monkeypatch):
    monkeypatch.setenv("KDSTUDIO_ANNOTATOR", "bob")
    rows = ["id,text"] + [f"d{i},story number {i}" for i in range(3)]
    with Project.init(tmp_path / "fresh", [Label(x) for x in LABELS]) as project:
        project.import_file(write(tmp_path / "d.csv", "\n".join(rows) + "\n"), ImportOptions(id_column="id"))
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            await pilot.pause()
            triage = app.query_one("#triage-pane")
            assert triage.order == "diverse" and [x.teacher_label for x in triage.queue] == [None] * 3
            assert "labelling from scratch, diverse documents first" in str(app.query_one("#triage-saved").render())
            await pilot.press("a")  # no teacher label to accept
            assert annotated(project) == []
            await pilot.press("2", "i", "3")
            assert [(d, label, who) for d, label, who in annotated(project)] == [
                (triage.queue[0].doc_id, "politics", "bob"), (triage.queue[2].doc_id, "tech", "bob")]
            info = " ".join(str(app.query_one("#triage-info").render()).split())
            assert "End of this queue (3 documents). Press o for another order" in info, info
            await pilot.press("u")  # the third label undone: that document is back
            await pilot.press("o")  # the teacher's orders have nothing: back to a fresh cold start, one left
            await pilot.pause()
            assert [x.doc_id for x in triage.queue] == [project.store.ids_in_split("pool")[2]]  # not the ignored one
            await pilot.press("1")
            await pilot.pause()
            assert len(annotated(project)) == 2
            await pilot.press("f2", "f4")
            await pilot.pause()
            info = " ".join(str(app.query_one("#triage-info").render()).split())
            assert "Every pool document has a label or was ignored" in info, info


@pytest.mark.asyncio
async def test_the_cold_start_queue_spreads_over_the_corpus(tmp_path_factory):
    directory = cheap_slice(tmp_path_factory.mktemp("cold") / "bbc", limit=100, seed=7)
    with Project.open(directory) as project:
        diverse = project.triage_queue("diverse")
        gold = project.store.gold()
        pool = sorted(d for d in project.store.ids_in_split("pool"))
        assert len(diverse) == min(50, len(pool)) and {x.doc_id for x in diverse} <= set(pool)
        assert len({gold[x.doc_id] for x in diverse[:8]}) >= 4  # the first few already cover most classes
        project.set_label(diverse[0].doc_id, project.labels[0], annotator="t")
        assert diverse[0].doc_id not in {x.doc_id for x in project.triage_queue("diverse")}


@pytest.mark.asyncio
async def test_every_tab_key_works_from_inside_a_text_box(project_dir: Path):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project)
        async with app.run_test(size=SIZE) as pilot:
            tabs = app.query_one("#tabs")
            for box, tab in (("#budget_labels", "f5"), ("#limit", "f6"), ("#out", "f7"), ("#search", "f3")):
                await pilot.press(tab)
                await pilot.pause()
                app.query_one(box).focus()
                await pilot.pause()
                assert app.focused is app.query_one(box)
                for key, expected in (("f2", "dashboard"), (tab, None)):
                    await pilot.press(key)
                    await pilot.pause()
                    if expected:
                        assert tabs.active == expected, (box, key)
                        await pilot.press(tab)
                        await pilot.pause()
                        app.query_one(box).focus()
                        await pilot.pause()
            await pilot.press("f5")
            app.query_one("#budget_labels").focus()
            await pilot.press("f10")  # Cancel with nothing running: nothing happens, nothing breaks
            await pilot.press("f9")  # Resume with no run: said, not crashed
            await pilot.pause()
            assert not app.query_one("#distill-pane").running


SCREENS = [("dashboard", "f2"), ("corpus", "f3"), ("triage", "f4"), ("distill", "f5"), ("review", "f6"),
           ("export", "f7"), ("help", "f1")]


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_every_screen_at_80x24_and_120x40(project_dir: Path, size: tuple[int, int]):
    with Project.open(project_dir) as project:
        app = KdStudioApp(project, annotator="alice")
        async with app.run_test(size=size) as pilot:
            for name, key in SCREENS:
                await pilot.press(key)
                await pilot.pause()
                text = screen_text(app, project_dir)
                assert max(len(line) for line in text.splitlines()) <= size[0]
                check_snapshot(f"{name}-{size[0]}x{size[1]}", text)
                if name == "help":
                    await pilot.press("escape")
