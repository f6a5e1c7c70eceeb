"""Every error leaves the API as JSON ``{error, detail, hint}``; a client never sees a stack trace.

``ErrorBody`` is that body's one model: every route documents it for each error status it can answer
(``errors(...)``), and the OpenAPI document has no other error schema (see ``app/openapi.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from slimbert.errors import SlimBertError

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One invalid part of a request."""

    field: str = Field(description="where, dotted: 'texts.0', 'query.limit', 'path.name'; '' for the whole body")
    message: str


class ErrorBody(BaseModel):
    """Every error the API answers: what went wrong (``error``, ``detail``) and what to do (``hint``)."""

    error: str = Field(description="the kind: a domain error's name ('VariantNotFound', 'InvalidRecipe', ...), "
                                   "'invalid request' (the request does not fit its schema), 'http error' or "
                                   "'internal error'")
    detail: str | list[FieldError] = Field(description="a sentence, or for 'invalid request' one entry per field")
    hint: str = Field(description="what to change; may be empty")


# What each status means on this API; a route may say more for its own case (``errors(..., notes=)``).
STATUS_MEANING: dict[int, str] = {
    400: "the request names something malformed (an invalid family or variant name, a family with no variants)",
    401: "no API key or an unknown one (when SLIMBERT_API_KEYS is set); without keys, a call that needs the admin "
         "role over a non-loopback interface",
    403: "the key's role may not do this",
    404: "no such resource; the hint lists what exists",
    409: "the request clashes with the current state (a name taken, no live worker for the device)",
    413: "the body is over a size limit",
    415: "the content type is not accepted",
    422: "the request is invalid: the detail names each field and the hint says what to send",
    502: "a GPU worker failed the request",
    503: "the job queue (Redis) does not answer",
    504: "a GPU worker did not answer in time",
}


def errors(*codes: int, notes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: ``ErrorBody`` for each status code it can answer."""
    notes = notes or {}
    return {code: {"model": ErrorBody, "description": notes.get(code, STATUS_MEANING[code])} for code in codes}


def _body(error: str, detail: object, hint: str) -> dict[str, object]:
    return {"error": error, "detail": detail, "hint": hint}


def _allowed_methods(request: Request) -> str:
    """Every method the path answers, over all routes whose path matches (Starlette's own 405 names only
    the methods of the first route that matched the path)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # the routes of included routers, flattened
        path_regex = getattr(route, "path_regex", None)
        if path_regex is not None and path_regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def domain_error_response(exc: SlimBertError) -> JSONResponse:
    """The answer to a domain error, wherever it is raised (a route, or the plain-ASGI /predict)."""
    return JSONResponse(_body(type(exc).__name__, exc.detail, exc.hint), status_code=exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SlimBertError)
    async def _domain(_: Request, exc: SlimBertError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        hint = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
        return JSONResponse(_body("invalid request", fields, hint), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        hint = ""
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
            hint = f"this path answers {headers['Allow']}"
        return JSONResponse(_body("http error", str(exc.detail), hint), status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal error", type(exc).__name__, "see the API log"), status_code=500)
