"""Label Studio as the place where people check teacher labels: a text-classification project generated from the
label set, teacher labels as predictions, annotations back as human labels. The connection comes from
LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a legacy token or a personal access token); the key is never stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from kdstudio.errors import KdError
from kdstudio.interfaces import (
    ConnectResult,
    HumanLabel,
    LiveSession,
    PullResult,
    PushResult,
    ReviewBackend,
    ReviewEvent,
    ReviewItem,
)
from kdstudio.secrets import remember

URL_VAR, KEY_VAR = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
DOC_ID = "kd_doc_id"  # travels in each task's data: how a second push knows what is there already
FROM, TO = "label", "text"
# What the live server hears about (`kdstudio review connect` subscribes to these).
EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
# Label Studio proves each call to the live server with a secret derived from the API key, which both sides have:
# the webhook sends it as a header, and predictions come with it as the ML backend's basic-auth password.
SECRET_HEADER, BASIC_USER = "X-Kdstudio-Secret", "kdstudio"
SSRF_FIX = ("Label Studio 1.23 refuses local addresses unless it was started with SSRF_PROTECTION_ENABLED=false "
            "and ML_BLOCK_LOCAL_IP=false; restart it so, or serve on an address it may call (--host)")


def label_config(labels: list[str], descriptions: dict[str, str]) -> str:
    choices = "\n".join(
        f"    <Choice value={quoteattr(x)}{' hint=' + quoteattr(descriptions[x]) if descriptions.get(x) else ''}/>"
        for x in labels)
    return (f'<View>\n  <Text name="{TO}" value="${TO}"/>\n'
            f'  <Choices name="{FROM}" toName="{TO}" choice="single" showInLine="true">\n{choices}\n  </Choices>\n'
            "</View>")


class LabelStudioBackend(ReviewBackend):
    """Label Studio (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY): teacher labels as predictions, annotations back."""

    name = "labelstudio"
    live = True

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.url = os.environ.get(URL_VAR, "").rstrip("/")
        if not self.url:
            raise KdError(f"{URL_VAR} is not set", f"export {URL_VAR}=http://localhost:8080 and {KEY_VAR}=<token>")
        self._client: Any = None
        self._users: dict[int, str] = {}

    @property
    def location(self) -> str:
        return self.url

    # -- connection --------------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            key = os.environ.get(KEY_VAR, "")
            if not key:
                raise KdError(f"{KEY_VAR} is not set", "copy a token from Label Studio's Account & Settings page "
                                                       f"and export {KEY_VAR}=<token>")
            from label_studio_sdk import LabelStudio

            client = LabelStudio(base_url=self.url, api_key=key, timeout=30)
            # Fail here, with one line, rather than halfway through; and at once: the SDK's retries of a refused
            # connection (3 s of sleeping) help a request in flight, not a probe of a server that is not there.
            self._call(client.users.whoami, request_options={"max_retries": 0})
            self._client = client
        return self._client

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Every request goes through here: connection and token problems become one actionable line."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as exc:
            raise KdError(f"cannot reach Label Studio at {self.url}: {type(exc).__name__}: {exc}",
                          f"start it, or point {URL_VAR} at it") from None
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise KdError(f"Label Studio at {self.url} refused the token in {KEY_VAR} ({exc.status_code})",
                              "use a current legacy token or personal access token of a user of that server") \
                    from None
            body = str(exc.body)[:300] if exc.body is not None else ""
            raise KdError(f"Label Studio at {self.url} answered {exc.status_code}: {body}") from None

    # -- push --------------------------------------------------------------------------------------------

    def push(self, title: str, labels: list[str], descriptions: dict[str, str], items: Sequence[ReviewItem],
             project_ref: str | None) -> PushResult:
        client = self.client()
        project_id, created = self._project(client, title, labels, descriptions, project_ref)
        there = {task.data.get(DOC_ID) for task in self._tasks(client, project_id)}
        new = [item for item in items if item.doc_id not in there]
        if new:
            self._call(client.projects.import_tasks, id=project_id, request=[self._task(x) for x in new])
        return PushResult(str(project_id), created, len(new), len(items) - len(new))

    def _project(self, client: Any, title: str, labels: list[str], descriptions: dict[str, str],
                 project_ref: str | None) -> tuple[int, bool]:
        config = label_config(labels, descriptions)
        if project_ref is not None:
            project = self._call(self._existing_project, client, int(project_ref))
            if project is not None:
                if project.label_config != config:  # the label set changed since the last push
                    self._call(client.projects.update, id=project.id, label_config=config)
                return int(project.id), False
        project = self._call(client.projects.create, title=title[:50], label_config=config,
                             description="Teacher labels from kdstudio: correct them, or accept the prediction.",
                             show_skip_button=True)
        return int(project.id), True

    @staticmethod
    def _existing_project(client: Any, project_id: int) -> Any:
        from label_studio_sdk.core.api_error import ApiError

        try:
            return client.projects.get(id=project_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return None  # deleted on the server: a new one is made
            raise

    @staticmethod
    def _task(item: ReviewItem) -> dict[str, Any]:
        if item.label is None:  # the check sample: labelled blind, no prediction to follow
            return {"data": {TO: item.text, DOC_ID: item.doc_id}}
        prediction: dict[str, Any] = {"model_version": item.model or "teacher", "result": _result(item.label)}
        if item.confidence is not None:
            prediction["score"] = float(item.confidence)
        return {"data": {TO: item.text, DOC_ID: item.doc_id}, "predictions": [prediction]}

    def _tasks(self, client: Any, project_id: int) -> list[Any]:
        return list(self._call(client.tasks.list, project=project_id, fields="all", page_size=500))

    # -- pull --------------------------------------------------------------------------------------------

    def pull(self, project_ref: str, labels: list[str]) -> PullResult:
        client = self.client()
        users = {u.id: u.email or u.username for u in self._call(client.users.list)}
        found: list[HumanLabel] = []
        present: set[str] = set()
        ignored = 0
        for task in self._tasks(client, int(project_ref)):
            doc_id = (task.data or {}).get(DOC_ID)
            annotations = [a if isinstance(a, dict) else a.dict() for a in (task.annotations or [])]
            if not doc_id or not annotations:
                continue
            usable = []
            for a in annotations:
                label = _choice(a.get("result") or [])
                if a.get("was_cancelled") or label not in labels:
                    ignored += 1  # skipped, cancelled, empty, or a label kdstudio does not know
                    continue
                usable.append((a, label))
                present.add(self._ref(project_ref, a["id"]))
            if not usable:
                continue
            newest, label = max(usable, key=lambda pair: (str(pair[0].get("updated_at")), pair[0]["id"]))
            found.append(self._label(project_ref, doc_id, label, newest, users.get(newest.get("completed_by"))))
        return PullResult(found, ignored, self._ref(project_ref), present)

    def _ref(self, project_ref: str, annotation_id: Any = None) -> str:
        """The start of the refs of one annotation's versions (of every annotation of the project, without one)."""
        scope = f"labelstudio:{self.url}:{project_ref}:"
        return scope if annotation_id is None else f"{scope}{annotation_id}:"

    def _label(self, project_ref: str, doc_id: str, label: str, annotation: dict[str, Any], annotator: str | None
               ) -> HumanLabel:
        when = annotation.get("updated_at") or annotation.get("created_at")
        ref = f"{self._ref(project_ref, annotation['id'])}{when}"
        return HumanLabel(doc_id, label, annotator, _timestamp(when), ref)

    # -- live: `kdstudio review serve` and `connect` ----------------------------------------------------

    def connect(self, project_ref: str, url: str) -> ConnectResult:
        """Register the server as the project's ML backend (predictions) and subscribe it to annotation events; a
        second connect to the same URL registers nothing twice."""
        client, project = self.client(), int(project_ref)
        url = url.rstrip("/")
        hook, secret = f"{url}/webhook", self.live_secret()
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": BASIC_USER, "basic_auth_pass": secret}
        subscribed = bool(self._hooks(client, project, hook))
        backends = [b for b in self._call(client.ml.list, project=project) if (b.url or "").rstrip("/") == url]
        for backend in backends:  # registered before: it gets the current secret
            self._call_local(client.ml.update, id=backend.id, project=project, url=url, **auth)
        if not backends:
            self._call_local(client.ml.create, project=project, url=url, title="kdstudio",
                             description="The kept kdstudio student: predictions, and a new student as people label",
                             is_interactive=False, auto_update=True, **auth)
        # Label Studio subscribes a new ML backend's /webhook to every action itself (without the secret); older
        # servers do not subscribe it at all.
        hooks = self._hooks(client, project, hook)
        for h in hooks:
            self._call(client.webhooks.update, id=h.id, url=hook, headers={SECRET_HEADER: secret})
        if not hooks:
            self._call_local(client.webhooks.create, url=hook, project=project, send_payload=True,
                             send_for_all_actions=False, actions=list(EVENTS),
                             headers={SECRET_HEADER: secret})
        return ConnectResult(project_ref, not backends, not subscribed)

    def _hooks(self, client: Any, project: int, hook: str) -> list[Any]:
        return [h for h in self._call(client.webhooks.list, project=str(project)) if h.url == hook]

    def live_secret(self) -> str:
        """What Label Studio shows the live server to prove a call is its own: a keyed hash of this server's address,
        by the API key. Never the key itself, never written by kdstudio."""
        key = os.environ.get(KEY_VAR, "")
        if not key:
            raise KdError(f"{KEY_VAR} is not set", f"export {KEY_VAR}=<token>: the live server needs it too")
        secret = hmac.new(key.encode(), f"kdstudio live review {self.url}".encode(), hashlib.sha256).hexdigest()
        remember(secret)  # masked like the key wherever Label Studio echoes it back
        return secret

    def _call_local(self, fn: Any, **kwargs: Any) -> Any:
        """A call that makes Label Studio reach the server: its refusal of a local address gets its own fix."""
        try:
            return self._call(fn, **kwargs)
        except KdError as exc:
            if "ssrf" in exc.message.lower() or "local" in exc.message.lower() or "connect" in exc.message.lower():
                raise KdError(exc.message, SSRF_FIX) from None
            raise

    def live_app(self, project_ref: str, labels: list[str], session: LiveSession) -> Any:
        from kdstudio_plugins.review.labelstudio_live import live_app

        return live_app(self, project_ref, labels, session)

    def documents(self, project_ref: str) -> set[str]:
        return {doc for task in self._tasks(self.client(), int(project_ref))
                if (doc := (task.data or {}).get(DOC_ID))}

    def predict_open_tasks(self, project_ref: str, predict: Any, model_version: str) -> int:
        """The student's prediction on every task nobody has answered yet, and the project told to show that model
        version: Label Studio's sort by prediction score is then the student's uncertainty order."""
        client, project = self.client(), int(project_ref)
        tasks = [t for t in self._tasks(client, project) if not t.annotations and (t.data or {}).get(TO) is not None]
        answers = predict([str(t.data[TO]) for t in tasks]) if tasks else []
        made = [{"task": t.id, "model_version": a.model_version, "score": a.score, "result": _result(a.label)}
                for t, a in zip(tasks, answers, strict=True) if a is not None]
        if made:
            self._call(client.projects.import_predictions, id=project, request=made)
        self._call(client.projects.update, id=project, model_version=model_version)
        return len(made)

    def event(self, project_ref: str, payload: Any, labels: list[str]) -> ReviewEvent | None:
        """One of Label Studio's webhook payloads as people's labels and withdrawals: an annotation created or edited
        is a label (its newest version wins, as in `pull`); one deleted, skipped, or naming a label outside the set
        withdraws what its earlier versions said. None: the payload is not this project's or not understood."""
        if not isinstance(payload, dict) or not isinstance(payload.get("project"), dict) or \
                str(payload["project"].get("id")) != str(project_ref):
            return None
        action = payload.get("action")
        if action == "ANNOTATIONS_DELETED":
            gone = payload.get("annotations")
            if not isinstance(gone, list) or not all(isinstance(a, dict) and "id" in a for a in gone):
                return None
            return ReviewEvent(withdrawn=[self._ref(project_ref, a["id"]) for a in gone])
        if action not in EVENTS:
            return ReviewEvent()  # an event the server did not ask for: nothing to do
        annotations, tasks = payload.get("annotation"), payload.get("task")
        if not isinstance(annotations, list):
            annotations, tasks = [annotations], [tasks]
        if not isinstance(tasks, list) or len(tasks) != len(annotations):
            return None
        event = ReviewEvent()
        for annotation, task in zip(annotations, tasks, strict=True):
            if not isinstance(annotation, dict) or "id" not in annotation or not isinstance(task, dict):
                return None
            doc_id = (task.get("data") or {}).get(DOC_ID)
            if not doc_id:
                continue  # a task added in Label Studio by hand: not a kdstudio document
            label = _choice(annotation.get("result") or [])
            if annotation.get("was_cancelled") or label not in labels:
                event.withdrawn.append(self._ref(project_ref, annotation["id"]))
                continue
            event.labels.append(self._label(project_ref, str(doc_id), label, annotation,
                                            self._annotator(annotation.get("completed_by"))))
        return event

    def _annotator(self, user: Any) -> str | None:
        if isinstance(user, dict):
            return user.get("email") or user.get("username")
        if user not in self._users:  # a user this server has not seen: Label Studio is asked once
            try:
                self._users.update({u.id: u.email or u.username for u in self._call(self.client().users.list)})
            except KdError:
                return None
        return self._users.get(user)


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _result(label: str) -> list[dict[str, Any]]:
    return [{"from_name": FROM, "to_name": TO, "type": "choices", "value": {"choices": [label]}}]


def _choice(result: list[dict[str, Any]]) -> str | None:
    for region in result:
        if region.get("from_name") == FROM and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            return choices[0] if len(choices) == 1 else None
    return None
