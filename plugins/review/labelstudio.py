"""Label Studio as the place where people check teacher labels: a text-classification project generated from the
label set, teacher labels as predictions, annotations back as human labels. The connection comes from
LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a legacy token or a personal access token); the key is never stored."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from kdstudio.errors import KdError
from kdstudio.interfaces import HumanLabel, PullResult, PushResult, ReviewBackend, ReviewItem

URL_VAR, KEY_VAR = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
DOC_ID = "kd_doc_id"  # travels in each task's data: how a second push knows what is there already
FROM, TO = "label", "text"


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

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.url = os.environ.get(URL_VAR, "").rstrip("/")
        if not self.url:
            raise KdError(f"{URL_VAR} is not set", f"export {URL_VAR}=http://localhost:8080 and {KEY_VAR}=<token>")
        self._client: Any = None

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
            self._call(client.users.whoami)  # fail here, with one line, rather than halfway through
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
        prediction: dict[str, Any] = {"model_version": item.model or "teacher",
                                      "result": [{"from_name": FROM, "to_name": TO, "type": "choices",
                                                  "value": {"choices": [item.label]}}]}
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
            if not usable:
                continue
            newest, label = max(usable, key=lambda pair: (str(pair[0].get("updated_at")), pair[0]["id"]))
            when = newest.get("updated_at") or newest.get("created_at")
            found.append(HumanLabel(doc_id, label, users.get(newest.get("completed_by")), _timestamp(when),
                                    f"labelstudio:{self.url}:{project_ref}:{newest['id']}:{when}"))
        return PullResult(found, ignored)


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _choice(result: list[dict[str, Any]]) -> str | None:
    for region in result:
        if region.get("from_name") == FROM and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            return choices[0] if len(choices) == 1 else None
    return None
