"""``POST /predict`` as a plain ASGI handler in front of FastAPI: the route's own work, without the
framework's per-request machinery, for the requests that are valid.

Why: next to a few-millisecond INT8 forward pass, FastAPI's own per-request work (routing through
every route, solving the dependency tree, parsing the body to Python objects and validating those,
building a ``Response``) was a visible share of a served request, and more so while the compute
thread owns the cores; ``benchmarks/bench_serving.py --fast-path-ab`` measures what this handler
saves (docs/PERFORMANCE.md, Serving).

The FastAPI route in ``app/api/routes/predict.py`` stays: it is what ``/openapi.json`` describes, and
it answers every request this handler does not take. Anything this handler is not sure of (a content
type other than JSON, a body or query that does not validate, a repeated query parameter, a key the
access rule refuses) is handed to the app with its body replayed unchanged, so every error keeps its
one shape and its one handler. What this handler answers itself comes from the same functions the
route calls: the same models, the same ``run_predict``, the same serialization and header, and domain
errors through the app's own ``domain_error_response``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import check_access
from app.errors import domain_error_response
from app.schemas import Name, PredictRequest
from app.services.predict import predict as run_predict
from app.services.predict import server_timing
from slimbert.config import Settings
from slimbert.errors import SlimBertError

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_QUERY = ("family", "variant")


class _NotOurs(Exception):
    """The request is one the FastAPI route should answer."""


def _media_type(headers: dict[bytes, bytes]) -> str:
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().decode("latin-1").lower()


def _query(scope: Scope) -> dict[str, str | None]:
    """``family`` and ``variant`` from the query string, decoded as Starlette decodes it."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    found: dict[str, str | None] = dict.fromkeys(_QUERY)
    seen: set[str] = set()
    for key, value in pairs:
        if key in _QUERY:
            if key in seen:
                raise _NotOurs  # which one wins is the framework's rule, not ours to restate
            seen.add(key)
            try:
                found[key] = _NAME.validate_python(value)
            except ValidationError as exc:
                raise _NotOurs from exc
    return found


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the body already read to the app, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class FastPredict:
    """ASGI middleware: takes valid ``POST /predict`` requests, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        state = scope["app"].state  # Starlette puts the app in the scope before its middleware runs
        try:
            request, query = self._parse(scope, body, state.settings)
        except _NotOurs:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            result = await run_predict(state.engine, request.all_texts(), query["family"], query["variant"],
                                       request.field())
        except SlimBertError as exc:
            await domain_error_response(exc)(scope, receive, send)
            return
        payload = result.model_dump_json().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json"),
            (b"server-timing", server_timing(result).encode())]})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _parse(scope: Scope, body: bytes, settings: Settings) -> tuple[PredictRequest, dict[str, str | None]]:
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as Starlette reads it
        if _media_type(headers) != "application/json":
            raise _NotOurs
        try:
            check_access("predict", settings, headers.get(b"x-api-key", b"").decode("latin-1") or None, scope)
            request = PredictRequest.model_validate_json(body)
        except (SlimBertError, ValidationError) as exc:
            raise _NotOurs from exc
        return request, _query(scope)
