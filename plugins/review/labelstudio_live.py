"""The ML backend Label Studio calls (its protocol: GET /health, POST /setup, /predict and /webhook), as a Starlette
application over a live session (kdstudio.live_review.LiveLoop). Predictions never wait for training or for the
project: the session answers them from the student in memory. Events are parsed here and handed over at once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kdstudio.interfaces import LiveSession

if TYPE_CHECKING:
    from kdstudio_plugins.review.labelstudio import LabelStudioBackend

NO_STUDENT = "kdstudio-no-student-yet"


class BadRequest(Exception):
    pass


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object")
    return body


def live_app(backend: LabelStudioBackend, project_ref: str, labels: list[str], session: LiveSession) -> Starlette:
    from kdstudio_plugins.review.labelstudio import DOC_ID, TO, _result

    def version() -> str:
        return session.state().get("model_version") or NO_STUDENT

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({**session.state(), "model_class": "kdstudio", "project": project_ref})

    async def setup(request: Request) -> JSONResponse:
        await _body(request)  # it carries the project owner's token: read, never kept or logged
        return JSONResponse({"model_version": version()})

    async def predict(request: Request) -> JSONResponse:
        tasks = (await _body(request)).get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict)
                                                  for t in tasks):
            raise BadRequest("`tasks` must be a list of tasks, each with its `data`")
        texts = [str(t["data"].get(TO, "")) for t in tasks]
        answers = await run_in_threadpool(session.predict, texts)
        if any(a is None for a in answers):
            return JSONResponse({"results": [], "model_version": version()})
        return JSONResponse({"results": [{"result": _result(a.label), "score": a.score, "model_version":
                                          a.model_version} for a in answers if a is not None],
                             "model_version": version()})

    async def webhook(request: Request) -> JSONResponse:
        payload = await _body(request)
        event = await run_in_threadpool(backend.event, project_ref, payload, labels)
        if event is None:
            project = payload.get("project")
            if isinstance(project, dict) and str(project.get("id")) != project_ref:
                return JSONResponse({"ignored": f"not project {project_ref}"}, status_code=200)
            raise BadRequest(f"not a Label Studio annotation event this server understands ({DOC_ID} tasks)")
        if event.labels or event.withdrawn:
            session.receive(event)
        return JSONResponse({"labels": len(event.labels), "withdrawn": len(event.withdrawn)}, status_code=201)

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(routes=[Route("/", health), Route("/health", health), Route("/setup", setup, methods=["POST"]),
                             Route("/predict", predict, methods=["POST"]),
                             Route("/webhook", webhook, methods=["POST"])],
                     exception_handlers={BadRequest: bad_request})
