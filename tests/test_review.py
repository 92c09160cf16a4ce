"""Review in Label Studio, two ways, against a real server started here (its own virtualenv, 127.0.0.1 only).
Reviewers' annotations are made through its API with the reviewer's token, as the web page would make them."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import cheap_slice, run_cli, write
from labelstudio_server import TOKEN, USER, LabelStudio, free_port

from kdstudio.config import Label
from kdstudio.errors import ProjectLocked
from kdstudio.interfaces import Doc, TeachContext
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.store import ImportOptions, Ledger
from kdstudio.teaching import TeacherRunner

LABELS = ["sports", "politics", "tech"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    ls = LabelStudio(tmp_path_factory.mktemp("label-studio")).start()
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture
def env(server: LabelStudio) -> dict[str, str]:
    return {"LABEL_STUDIO_URL": server.url, "LABEL_STUDIO_API_KEY": TOKEN}


@pytest.fixture
def client(server: LabelStudio):
    from label_studio_sdk import LabelStudio as Client

    return Client(base_url=server.url, api_key=TOKEN)


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """Twelve documents labelled by the simulated teacher with noise, so that confidences differ."""
    directory = tmp_path / "p"
    rows = ["id,text,label"] + [f"d{i:02d},news item {i} about {LABELS[i % 3]},{LABELS[i % 3]}" for i in range(12)]
    with Project.init(directory, [Label(x, f"all about {x}") for x in LABELS]) as project:
        project.import_file(write(tmp_path / "docs.csv", "\n".join(rows) + "\n"),
                            ImportOptions(id_column="id", label_column="label"))
        gold = project.store.gold()
        teacher = get_plugins().get("teacher", "oracle").cls(noise=0.4, seed=3)
        docs = [Doc(d, t) for d, t in zip(sorted(gold), project.store.texts(sorted(gold)), strict=True)]
        TeacherRunner(Ledger(project.store), teacher, TeachContext(LABELS, gold=gold), None).label(docs)
    return directory


def teacher_labels_of(project: Project) -> dict[str, tuple[str, float]]:
    """The newest teacher label of each document and its confidence."""
    rows = project.store.con.execute("SELECT doc_id, arg_max(label, id), arg_max(confidence, id) FROM labels "
                                     "WHERE source = 'teacher' GROUP BY 1").fetchall()
    return {d: (label, conf) for d, label, conf in rows}


def teacher_labels(directory: Path) -> dict[str, tuple[str, float]]:
    with Project.open(directory, read_only=True) as project:
        return teacher_labels_of(project)


def tasks(client, project_id: int) -> list:
    return list(client.tasks.list(project=project_id, fields="all"))


def annotate(client, task, label: str, *, cancelled: bool = False):
    result = [] if cancelled else [{"from_name": "label", "to_name": "text", "type": "choices",
                                    "value": {"choices": [label]}}]
    return client.annotations.create(id=task.id, result=result, was_cancelled=cancelled)


def test_push_builds_the_project_sends_least_certain_first_and_never_twice(project_dir: Path, env: dict,
                                                                           client):
    first = run_cli("review", "push", "-p", str(project_dir), "--filter", "all", "--limit", "5", env=env)
    assert first.returncode == 0, first.stderr
    assert "(created)" in first.stdout and "5 sent" in first.stdout
    with Project.open(project_dir, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
    config = client.projects.get(id=project_id).label_config
    for label in LABELS:
        assert f'<Choice value="{label}" hint="all about {label}"/>' in config
    pushed = tasks(client, project_id)
    teacher = teacher_labels(project_dir)
    least_certain = sorted(teacher, key=lambda d: (teacher[d][1], d))[:5]
    assert sorted(t.data["kd_doc_id"] for t in pushed) == sorted(least_certain)
    for task in pushed:
        prediction = task.predictions[0]
        label, confidence = teacher[task.data["kd_doc_id"]]
        assert prediction.result[0]["value"]["choices"] == [label]
        assert prediction.score == pytest.approx(confidence) and prediction.model_version.startswith("oracle")
    again = run_cli("review", "push", "-p", str(project_dir), "--filter", "all", env=env)
    assert again.returncode == 0 and "7 sent, 5 already there" in again.stdout and "(created)" not in again.stdout
    ids = [t.data["kd_doc_id"] for t in tasks(client, project_id)]
    assert len(ids) == 12 == len(set(ids))


@pytest.mark.slow
def test_low_confidence_and_disagreement_filters(project_dir: Path, env: dict):
    below = run_cli("review", "push", "-p", str(project_dir), "--below", "0.7", env=env)
    expected = sum(conf < 0.7 for _, conf in teacher_labels(project_dir).values())
    assert below.returncode == 0 and f"{expected} teacher labels chosen, {expected} sent" in below.stdout
    no_student = run_cli("review", "push", "-p", str(project_dir), "--filter", "disagreement", env=env)
    assert no_student.returncode == 1 and "no trained student in this project" in no_student.stderr
    with Project.open(project_dir) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=6, batch=3, budget_labels=9, val_limit=0))
        teacher = {d: label for d, (label, _) in teacher_labels_of(project).items()}
        unchecked = sorted(teacher)
        student = dict(zip(unchecked, project._student_predictor()(unchecked), strict=True))
    disagreement = run_cli("review", "push", "-p", str(project_dir), "--filter", "disagreement", env=env)
    n = sum(student[d] != teacher[d] for d in unchecked)
    assert disagreement.returncode == 0 and f"{n} teacher labels chosen" in disagreement.stdout


@pytest.mark.slow
def test_the_suspect_filter_sends_the_audits_most_likely_wrong_labels_first(project_dir: Path, env: dict, client):
    with Project.open(project_dir) as project:
        project.embed()
        ranked = [s.doc_id for s in project.audit().suspects]
    pushed = run_cli("review", "push", "-p", str(project_dir), "--filter", "suspect", "--limit", "3", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "3 teacher labels chosen, 3 sent" in pushed.stdout
    with Project.open(project_dir, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
    assert sorted(t.data["kd_doc_id"] for t in tasks(client, project_id)) == sorted(ranked[:3])


def test_pull_brings_human_labels_that_override_the_teacher_and_follow_updates(project_dir: Path, env: dict,
                                                                               client):
    assert run_cli("review", "push", "-p", str(project_dir), "--filter", "all", env=env).returncode == 0
    with Project.open(project_dir, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
    by_doc = {t.data["kd_doc_id"]: t for t in tasks(client, project_id)}
    teacher = teacher_labels(project_dir)
    wrong = next(d for d, (label, _) in teacher.items() if label != LABELS[int(d[1:]) % 3])
    right = next(d for d, (label, _) in teacher.items() if label == LABELS[int(d[1:]) % 3])
    skipped = next(d for d in sorted(teacher) if d not in (wrong, right))
    correction = annotate(client, by_doc[wrong], LABELS[int(wrong[1:]) % 3])
    annotate(client, by_doc[right], teacher[right][0])
    annotate(client, by_doc[skipped], "", cancelled=True)

    pulled = run_cli("review", "pull", "-p", str(project_dir), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "2 documents with a human label, 2 new or updated" in pulled.stdout and "1 annotations ignored" in \
        pulled.stdout
    with Project.open(project_dir) as project:
        rows = project.store.con.execute(
            "SELECT doc_id, label, annotator, annotated_at IS NOT NULL FROM labels WHERE source = 'human' ORDER BY 1"
        ).fetchall()
        assert rows == sorted([(wrong, LABELS[int(wrong[1:]) % 3], USER, True),
                               (right, teacher[right][0], USER, True)])
        # In training, the person's label replaces the teacher's.
        run_id = project.store.con.execute("INSERT INTO runs (config, status) VALUES ('{}', 'running') RETURNING id"
                                           ).fetchall()[0][0]
        assert Ledger(project.store).run_labels(run_id)[wrong].label == LABELS[int(wrong[1:]) % 3]

    again = run_cli("review", "pull", "-p", str(project_dir), env=env)
    assert "0 new or updated, 2 already pulled" in again.stdout
    client.annotations.update(id=correction.id, result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                                         "value": {"choices": [teacher[wrong][0]]}}])
    updated = run_cli("review", "pull", "-p", str(project_dir), env=env)
    assert "1 new or updated" in updated.stdout
    with Project.open(project_dir, read_only=True) as project:
        assert dict(project.store.current_label_distribution())  # still readable
        newest = project.store.con.execute("SELECT arg_max(label, id) FROM labels WHERE doc_id = ? AND "
                                           "source = 'human'", [wrong]).fetchall()[0][0]
        assert newest == teacher[wrong][0]
    report = run_cli("review", "report", "-p", str(project_dir))
    assert report.returncode == 0 and "2/2 agreed, accuracy 1.000" in report.stdout


def test_the_report_measures_the_teacher_per_class(project_dir: Path, env: dict, client):
    assert run_cli("review", "push", "-p", str(project_dir), "--filter", "all", env=env).returncode == 0
    with Project.open(project_dir, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
    teacher = teacher_labels(project_dir)
    for task in tasks(client, project_id):  # the reviewer gives the true label everywhere
        annotate(client, task, LABELS[int(task.data["kd_doc_id"][1:]) % 3])
    assert run_cli("review", "pull", "-p", str(project_dir), env=env).returncode == 0
    with Project.open(project_dir, read_only=True) as project:
        report = project.review_report()
    truth = {d: LABELS[int(d[1:]) % 3] for d in teacher}
    assert report.n == 12 and report.agreed == sum(teacher[d][0] == truth[d] for d in truth)
    for label in LABELS:
        docs = [d for d in truth if truth[d] == label]
        assert report.per_class[label] == (len(docs), sum(teacher[d][0] == label for d in docs))


def test_a_personal_access_token_works_too(project_dir: Path, server: LabelStudio, client):
    token = client.tokens.create().token  # a JWT refresh token: the SDK trades it for access tokens itself
    result = run_cli("review", "push", "-p", str(project_dir), "--limit", "2", "--filter", "all",
                     env={"LABEL_STUDIO_URL": server.url, "LABEL_STUDIO_API_KEY": token})
    assert result.returncode == 0, result.stderr
    assert "2 sent" in result.stdout


def test_a_bad_token_or_no_server_is_one_line_and_changes_nothing(project_dir: Path, server: LabelStudio, env: dict):
    assert run_cli("review", "push", "-p", str(project_dir), "--limit", "3", env=env).returncode == 0
    with Project.open(project_dir, read_only=True) as project:
        before = project.store.dump()
    bad = run_cli("review", "pull", "-p", str(project_dir), env={**env, "LABEL_STUDIO_API_KEY": "not-a-token"})
    assert bad.returncode == 1 and "refused the token in LABEL_STUDIO_API_KEY (401)" in bad.stderr
    down = run_cli("review", "push", "-p", str(project_dir),
                   env={**env, "LABEL_STUDIO_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot reach Label Studio at http://127.0.0.1:9" in down.stderr
    unset = run_cli("review", "pull", "-p", str(project_dir), env={"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""})
    assert unset.returncode == 1 and "LABEL_STUDIO_URL is not set" in unset.stderr
    for result in (bad, down, unset):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 2  # error + fix
    with Project.open(project_dir, read_only=True) as project:
        assert project.store.dump() == before
    for path in project_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in json.dumps(before, default=str)


def test_the_server_listens_on_loopback_only(server: LabelStudio):
    addresses = server.listening()
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_the_check_sample_goes_to_label_studio_blind_and_comes_back_as_its_truth(tmp_path: Path, env: dict, client):
    directory = tmp_path / "checked"
    rows = ["id,text,label"] + [f"c{i:02d},story {i} about {LABELS[i % 3]},{LABELS[i % 3]}" for i in range(30)]
    with Project.init(directory, [Label(x) for x in LABELS]) as project:
        project.import_file(write(tmp_path / "c.csv", "\n".join(rows) + "\n"),
                            ImportOptions(id_column="id", label_column="label"))
        project.draw_check(12)
        drawn = sorted(project.store.ids_in_split("check"))
    pushed = run_cli("review", "push", "-p", str(directory), "--filter", "check", env=env)
    assert pushed.returncode == 0 and "12 sent" in pushed.stdout, pushed.stderr
    with Project.open(directory, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
    sent = tasks(client, project_id)
    assert sorted(t.data["kd_doc_id"] for t in sent) == drawn
    assert all(not t.predictions for t in sent)  # blind: nothing to follow
    for task in sent[:10]:  # the person disagrees with gold on one of them
        doc = task.data["kd_doc_id"]
        annotate(client, task, LABELS[(int(doc[1:]) + (doc == drawn[0])) % 3])
    pulled = run_cli("review", "pull", "-p", str(directory), env=env)
    assert pulled.returncode == 0 and "10 new or updated" in pulled.stdout, pulled.stderr
    with Project.open(directory, read_only=True) as project:
        assert project.status().check == {"size": 12, "checked": 12, "by_people": 10, "by_gold": 2}
        assert len(project.triage_queue("check")) == 2  # what people have not labelled yet


# -- the live loop: `kdstudio review serve` as Label Studio's ML backend ---------------------------------------------


class LiveBackend:
    """`kdstudio review serve` in a child process, on 127.0.0.1 and a free port; stopped by its PID."""

    def __init__(self, directory: Path, env: dict[str, str], port: int, *args: str) -> None:
        self.directory, self.env, self.port, self.args = directory, env, port, args
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveBackend:
        log = (self.directory.parent / f"serve-{self.port}.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kdstudio", "review", "serve", "-p", str(self.directory), "--port", str(self.port),
             *self.args], env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                self.health()
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the backend did not answer: {self.log()}")

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            return json.loads(response.read())

    def post(self, path: str, body: object, secret: str = "") -> tuple[int, dict]:
        """A call as Label Studio makes it once connected: the secret as the webhook's header and as the ML
        backend's basic-auth password."""
        basic = base64.b64encode(f"kdstudio:{secret}".encode()).decode()
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "X-Kdstudio-Secret": secret,
                                                  "Authorization": f"Basic {basic}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def log(self) -> str:
        return (self.directory.parent / f"serve-{self.port}.log").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(30)


def human_rows(directory: Path, timeout: float = 2.0, until=lambda rows: True) -> list[tuple]:
    """The project's human labels (doc, label, annotator, ref), read as soon as the server lets go of the file and
    `until` holds, within `timeout` seconds."""
    deadline = time.time() + timeout
    rows: list[tuple] = []
    while True:
        try:
            with Project.open(directory, read_only=True) as project:
                rows = project.store.con.execute("SELECT doc_id, label, annotator, review_ref FROM labels "
                                                 "WHERE source = 'human' ORDER BY id").fetchall()
        except ProjectLocked:
            pass
        if until(rows) or time.time() > deadline:
            return rows
        time.sleep(0.2)  # not so often that this reader keeps the server from the file


def wait_for(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture
def live_dir(tmp_path: Path) -> Path:
    """bbc-news, 80 documents embedded with the test encoder, and a first student from the simulated teacher."""
    directory = cheap_slice(tmp_path / "live", 80, seed=4)
    with Project.open(directory) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=5, budget_labels=15, val_limit=0))
    return directory


@pytest.mark.slow
def test_the_live_loop_learns_as_people_label_in_label_studio(live_dir: Path, env: dict, client):
    assert run_cli("review", "push", "-p", str(live_dir), "--filter", "all", "--limit", "6", env=env).returncode == 0
    with Project.open(live_dir, read_only=True) as project:
        project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
        labels, first_student = project.labels, project.students()[-1]["id"]
    backend = LiveBackend(live_dir, env, free_port(), "--every", "3", "--batch", "4").start()
    try:
        assert backend.health()["model_version"] == f"kdstudio-student-{first_student}-logreg"
        connected = run_cli("review", "connect", "-p", str(live_dir), "--url", backend.url, env=env)
        assert connected.returncode == 0, connected.stderr
        assert "registered, annotation events subscribed" in connected.stdout
        again = run_cli("review", "connect", "-p", str(live_dir), "--url", backend.url, env=env)
        assert "was already registered" in again.stdout and "were already subscribed" in again.stdout
        assert [b.url for b in client.ml.list(project=project_id)] == [backend.url]

        by_doc = {t.data["kd_doc_id"]: t for t in tasks(client, project_id)}
        docs = sorted(by_doc)
        first = annotate(client, by_doc[docs[0]], labels[0])
        rows = human_rows(live_dir, until=lambda rows: len(rows) == 1)
        assert [(d, label, who) for d, label, who, _ in rows] == [(docs[0], labels[0], USER)]  # within 2 s

        # The third new label trains a new student: new tasks, and new predictions on every open task.
        annotate(client, by_doc[docs[1]], labels[1])
        annotate(client, by_doc[docs[2]], labels[2])
        state = wait_for(lambda: (s := backend.health())["rounds"] >= 1 and s, 60, "a new student")
        version = state["model_version"]
        assert version != f"kdstudio-student-{first_student}-logreg", backend.log()
        open_tasks = wait_for(lambda: [t for t in tasks(client, project_id) if not t.annotations] if len(
            tasks(client, project_id)) == 10 else None, 30, "four new tasks")
        assert all(any(p.model_version == version for p in t.predictions) for t in open_tasks), backend.log()
        secret = next(h.headers for h in client.webhooks.list(project=str(project_id)))["X-Kdstudio-Secret"]
        asked = {"tasks": [{"id": 1, "data": {"text": "a match won in extra time"}}]}
        assert backend.post("/predict", asked)[0] == 401  # without what connect gave Label Studio
        status, answer = backend.post("/predict", asked, secret)
        assert status == 200 and answer["results"][0]["model_version"] == version
        assert answer["results"][0]["result"][0]["value"]["choices"][0] in labels
        with_project = human_rows(live_dir)
        assert len(with_project) == 3

        client.annotations.delete(id=first.id)  # taken back in Label Studio: withdrawn here
        assert [r[0] for r in human_rows(live_dir, until=lambda rows: len(rows) == 2)] == docs[1:3]
        third = next(a for a in client.annotations.list(id=by_doc[docs[2]].id))
        client.annotations.update(id=third.id, result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                                        "value": {"choices": [labels[0]]}}])
        edited = human_rows(live_dir, until=lambda rows: len(rows) == 3)  # an edit is a new version, live too
        assert [(d, label) for d, label, _, _ in edited][-1] == (docs[2], labels[0])
        status, _ = backend.post("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": project_id},
                                              "annotation": "[red]garbage\x1b[2J"}, secret)
        assert status == 400
    finally:
        backend.stop(signal.SIGKILL)  # kill -9: whatever it held in memory is gone

    # While no server runs, people go on: a new label and an edit reach the project at the next start.
    annotate(client, by_doc[docs[3]], labels[3])
    second = next(a for a in client.annotations.list(id=by_doc[docs[1]].id))
    client.annotations.update(id=second.id, result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                                     "value": {"choices": [labels[4]]}}])
    restarted = LiveBackend(live_dir, env, free_port(), "--every", "50").start()
    try:
        rows = human_rows(live_dir)
        newest = {d: label for d, label, _, _ in rows}  # in id order: the last of each is its newest
        assert newest == {docs[1]: labels[4], docs[2]: labels[0], docs[3]: labels[3]}
        refs = [r[3] for r in rows]
        assert len(refs) == len(set(refs)) == 5  # each edit is a new version; nothing doubled
    finally:
        restarted.stop()
    assert secret not in backend.log() + restarted.log() and env["LABEL_STUDIO_API_KEY"] not in backend.log()
    assert run_cli("review", "pull", "-p", str(live_dir), env=env).stdout.count("0 new or updated") == 1
    with Project.open(live_dir, read_only=True) as project:
        live = [r for r in project.runs() if r.config.get("teacher") == "people"]
        assert len(live) == 1 and live[0].status == "finished"


@pytest.mark.slow
def test_the_live_loop_starts_from_nothing(tmp_path: Path, env: dict, client):
    """No label, no student, nothing pushed: serve makes the review project with documents spread over the corpus,
    and the first labels people give there train the first student, which predicts and picks the next tasks."""
    directory = cheap_slice(tmp_path / "cold", 60, seed=7)
    backend = LiveBackend(directory, env, free_port(), "--every", "3", "--batch", "5").start()
    try:
        assert backend.health()["model_version"] is None
        with Project.open(directory, read_only=True) as project:
            project_id = int(project.store.con.execute("SELECT external_id FROM review_projects").fetchall()[0][0])
            labels = project.labels
        first = tasks(client, project_id)
        assert len(first) == 5 and not any(t.predictions for t in first)  # blind: nobody has said anything yet
        assert run_cli("review", "connect", "-p", str(directory), "--url", backend.url, env=env).returncode == 0
        for task, label in zip(first, labels, strict=False):
            annotate(client, task, label)
            if len(human_rows(directory)) == 3:
                break
        state = wait_for(lambda: (s := backend.health())["rounds"] >= 1 and not s["training"] and s, 60,
                         "a first student")
        assert state["model_version"].startswith("kdstudio-student-"), backend.log()
        after = tasks(client, project_id)
        assert len(after) == 10 and all(any(p.model_version == state["model_version"] for p in t.predictions)
                                        for t in after if not t.annotations), backend.log()
    finally:
        backend.stop()
