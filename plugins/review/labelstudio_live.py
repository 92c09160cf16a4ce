"""The ML backend Label Studio calls (its protocol: GET /health, POST /setup, /predict and /webhook), as a Starlette
application over a live session (kdstudio.live_review.LiveLoop). Predictions never wait for training or for the
project: the session answers them from the student in memory. Events are parsed here and handed over at once."""

from __future__ import annotations

import base64
import binascii
import hmac
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


class Unauthorized(Exception):
    pass


def _basic_password(request: Request) -> str:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(encoded, validate=True).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _require(given: str, secret: str, what: str) -> None:
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Unauthorized(f"{what} without kdstudio's secret: run `kdstudio review connect` with the same "
                           "LABEL_STUDIO_API_KEY as this server")


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object")
    return body


def live_app(backend: LabelStudioBackend, project_ref: str, labels: list[str], session: LiveSession) -> Starlette:
    from kdstudio_plugins.review.labelstudio import DOC_ID, SECRET_HEADER, TO, _result

    secret = backend.live_secret()

    def version() -> str:
        return session.state().get("model_version") or NO_STUDENT

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({**session.state(), "model_class": "kdstudio", "project": project_ref})

    async def setup(request: Request) -> JSONResponse:
        _require(_basic_password(request), secret, "a setup call")
        await _body(request)  # it carries the project owner's token: read, never kept or logged
        return JSONResponse({"model_version": version()})

    async def predict(request: Request) -> JSONResponse:
        _require(_basic_password(request), secret, "a predict call")
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
        _require(request.headers.get(SECRET_HEADER, ""), secret, "an event")
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
        return JSONResponse({"error": str(exc)}, status_code=401 if isinstance(exc, Unauthorized) else 400)

    return Starlette(routes=[Route("/", health), Route("/health", health), Route("/setup", setup, methods=["POST"]),
                             Route("/predict", predict, methods=["POST"]),
                             Route("/webhook", webhook, methods=["POST"])],
                     exception_handlers={BadRequest: bad_request, Unauthorized: bad_request})
