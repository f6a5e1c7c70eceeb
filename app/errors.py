"""Every error leaves the API as JSON ``{error, detail, hint}``; a client never sees a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slimbert.errors import SlimBertError

log = logging.getLogger(__name__)


def _body(error: str, detail: object, hint: str) -> dict[str, object]:
    return {"error": error, "detail": detail, "hint": hint}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SlimBertError)
    async def _domain(_: Request, exc: SlimBertError) -> JSONResponse:
        return JSONResponse(_body(type(exc).__name__, exc.detail, exc.hint), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        hint = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
        return JSONResponse(_body("invalid request", fields, hint), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body("http error", exc.detail, ""), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal error", type(exc).__name__, "see the API log"), status_code=500)
