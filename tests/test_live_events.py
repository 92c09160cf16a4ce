"""The live server's HTTP face, in process: Label Studio's webhook payloads become people's labels and withdrawals,
garbage gets a 400 and changes nothing, and data stays data. The whole loop against a real Label Studio is
tests/test_review.py's slow test; here a recording session stands in for the project so that only parsing is tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kdstudio.interfaces import Prediction, ReviewEvent

LS = "http://127.0.0.1:9"  # never called: every payload here names its annotator
LABELS = ["sport", "[red]tech[/red]", "polit\x1bics"]


class RecordingSession:
    """What the app hands over, kept for the test; predictions from a fixed answer."""

    def __init__(self, answer: Prediction | None = None) -> None:
        self.events: list[ReviewEvent] = []
        self.answer = answer

    def predict(self, texts: Sequence[str]) -> list[Prediction | None]:
        return [self.answer] * len(texts)

    def receive(self, event: ReviewEvent) -> None:
        self.events.append(event)

    def state(self) -> dict[str, Any]:
        return {"status": "UP", "model_version": self.answer.model_version if self.answer else None}


@pytest.fixture
def served(monkeypatch) -> tuple[TestClient, RecordingSession]:
    """The app as Label Studio calls it once connected: the secret on every event and prediction call."""
    from kdstudio_plugins.review.labelstudio import BASIC_USER, SECRET_HEADER, LabelStudioBackend

    monkeypatch.setenv("LABEL_STUDIO_URL", LS)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "a-key")
    session, backend = RecordingSession(), LabelStudioBackend()
    client = TestClient(backend.live_app("7", LABELS, session), headers={SECRET_HEADER: backend.live_secret()})
    client.auth = (BASIC_USER, backend.live_secret())
    return client, session


def test_calls_without_the_secret_are_refused_and_change_nothing(served):
    client, session = served
    bare = TestClient(client.app)
    refused = [bare.post("/webhook", json=created(11, "sport")),
               bare.post("/webhook", json=created(11, "sport"), headers={"X-Kdstudio-Secret": "guess"}),
               bare.post("/predict", json={"tasks": []}), bare.post("/setup", json={}),
               bare.post("/predict", json={"tasks": []}, auth=("kdstudio", "guess")),
               bare.post("/predict", json={"tasks": []}, headers={"Authorization": "Basic ***not base64"})]
    assert [r.status_code for r in refused] == [401] * 6
    assert all("kdstudio review connect" in r.json()["error"] for r in refused)
    assert session.events == [] and bare.get("/health").status_code == 200
    assert "a-key" not in str([r.json() for r in refused])


def created(annotation_id: int, label: str, doc: str = "bbc-1", **extra: Any) -> dict[str, Any]:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 7},
            "task": {"id": 1, "data": {"text": "t", "kd_doc_id": doc}},
            "annotation": {"id": annotation_id, "updated_at": "2026-12-04T10:00:00Z",
                           "completed_by": {"id": 1, "email": "ann@example.org"},
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": [label]}}], **extra}}


def test_an_annotation_is_a_label_and_brackets_and_escapes_are_data(served):
    client, session = served
    response = client.post("/webhook", json=created(11, "[red]tech[/red]"))
    assert response.status_code == 201 and response.json() == {"labels": 1, "withdrawn": 0}
    (label,) = session.events[0].labels
    assert (label.doc_id, label.label, label.annotator) == ("bbc-1", "[red]tech[/red]", "ann@example.org")
    assert label.ref == f"labelstudio:{LS}:7:11:2026-12-04T10:00:00Z"
    client.post("/webhook", json=created(12, "polit\x1bics"))
    assert session.events[1].labels[0].label == "polit\x1bics"


def test_a_skip_an_unknown_label_and_a_deletion_withdraw(served):
    client, session = served
    client.post("/webhook", json=created(11, "sport", was_cancelled=True))
    client.post("/webhook", json=created(12, "[red]TECH"))  # not one of the project's labels
    deleted = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 7},
                                            "annotations": [{"id": 13}, {"id": 14}]})
    assert deleted.json() == {"labels": 0, "withdrawn": 2}
    ref = f"labelstudio:{LS}:7:"
    assert [e.withdrawn for e in session.events] == [[f"{ref}11:"], [f"{ref}12:"], [f"{ref}13:", f"{ref}14:"]]
    assert not any(e.labels for e in session.events)


def test_other_projects_and_hand_made_tasks_change_nothing(served):
    client, session = served
    other = created(11, "sport")
    other["project"] = {"id": 8}
    assert client.post("/webhook", json=other).json() == {"ignored": "not project 7"}
    hand_made = created(12, "sport")
    del hand_made["task"]["data"]["kd_doc_id"]
    assert client.post("/webhook", json=hand_made).json() == {"labels": 0, "withdrawn": 0}
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}}).status_code == 201
    assert session.events == []


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b"\xff\xfe", b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": "x"}',
    b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"result": []}, "task": {}}',
    b'{"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"pk": 1}]}',
    b'{"action": "ANNOTATION_CREATED", "project": 7}',
])
def test_garbage_gets_one_line_and_a_400(served, body: bytes):
    client, session = served
    response = client.post("/webhook", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "\n" not in response.json()["error"]
    assert session.events == []


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED",
                               "ANNOTATIONS_DELETED", "TASKS_DELETED"]),
       annotation=json_values, task=json_values)
def test_no_payload_breaks_the_server(served, action: str, annotation: Any, task: Any):
    client, _ = served
    response = client.post("/webhook", json={"action": action, "project": {"id": 7}, "annotation": annotation,
                                             "annotations": annotation, "task": task})
    assert response.status_code in (201, 400)


def test_predictions_name_their_model_and_wait_for_a_student(served):
    client, session = served
    tasks = {"tasks": [{"id": 1, "data": {"text": "a [b]match[/b]"}}]}
    assert client.post("/predict", json=tasks).json() == {"results": [], "model_version": "kdstudio-no-student-yet"}
    session.answer = Prediction("[red]tech[/red]", 0.75, "kdstudio-student-3-logreg")
    answer = client.post("/predict", json=tasks).json()
    assert answer["model_version"] == "kdstudio-student-3-logreg"
    assert answer["results"][0]["score"] == 0.75
    assert answer["results"][0]["result"][0]["value"]["choices"] == ["[red]tech[/red]"]
    assert client.post("/predict", json={"tasks": [{"id": 1}]}).status_code == 400
    assert client.get("/health").json()["project"] == "7"


def test_serve_and_connect_refuse_in_one_line(tmp_path):
    """No Label Studio configured, a port already taken, a review tool that cannot be reached: one line each, a
    non-zero exit, and the project as it was."""
    import socket

    from conftest import cheap_slice, cli
    from labelstudio_server import free_port

    directory = cheap_slice(tmp_path / "p", 30, seed=1)
    unset = cli("review", "serve", "-p", str(directory), "--port", str(free_port()), env={"LABEL_STUDIO_URL": ""})
    assert unset.returncode != 0 and "LABEL_STUDIO_URL is not set" in unset.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = cli("review", "serve", "-p", str(directory), "--port", port, env={"LABEL_STUDIO_URL": LS})
    assert busy.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    unreachable = cli("review", "connect", "-p", str(directory), "--url", "http://127.0.0.1:9090",
                      env={"LABEL_STUDIO_URL": LS, "LABEL_STUDIO_API_KEY": "k"})
    assert unreachable.returncode != 0 and "127.0.0.1:9" in unreachable.stderr
    for result in (unset, busy, unreachable):
        assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    from kdstudio.project import Project

    with Project.open(directory, read_only=True) as project:
        assert project.store.con.execute("SELECT count(*) FROM review_projects").fetchall()[0][0] == 0
