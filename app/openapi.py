"""The OpenAPI document, told as the configured server behaves.

FastAPI's generated document is amended where only the app's ``Settings`` know the truth:

- security: which operations need a key depends on ``SLIMBERT_API_KEYS`` and ``SLIMBERT_OPEN_PREDICT``
  (``app.api.deps.access_of``), and so do their 401 and 403 answers;
- request limits read from settings (texts per request, characters per text) become ``maxItems`` and
  ``maxLength`` on ``PredictRequest``;
- every error is ``ErrorBody``: FastAPI's default 422 ``HTTPValidationError`` is replaced wherever it
  would appear, and its schemas are dropped from the components, as is any schema nothing refers to (a
  stale copy, such as BenchmarkSpec without the bounds its request body shows, would mislead a client).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts

from app.api.deps import API_KEY_SCHEME, access_of, key_scheme_description, role_of_route
from app.errors import STATUS_MEANING, ErrorBody
from slimbert.config import Settings

ERROR_REF = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
_DEFAULT_422 = ("HTTPValidationError", "ValidationError")
NON_BLANK = r"\S"  # what check_texts calls non-blank: str.strip() leaves something
_BUG = "a bug: the detail names the exception, the API log has the trace"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace ``app.openapi`` with the amended document (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            _errors(doc)
            _security(doc, app, settings)
            _text_limits(doc, settings)
            _drop_unreferenced(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(code: int) -> dict[str, Any]:
    return {"description": STATUS_MEANING.get(code, _BUG), "content": {"application/json": {"schema": ERROR_REF}}}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc.get("paths", {}).items() for method, op in item.items()]


def _errors(doc: dict[str, Any]) -> None:
    for _, _, op in _operations(doc):
        responses = op.setdefault("responses", {})
        default = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if default.get("$ref", "").endswith("/HTTPValidationError"):
            responses["422"] = _error_response(422)
        if "requestBody" in op:  # FastAPI answers a body it cannot parse (bytes that are not JSON) with 400
            unparsable = "the body could not be parsed"
            if "400" in responses:
                responses["400"]["description"] += f"; or {unparsable}"
            else:
                responses["400"] = _error_response(400) | {"description": unparsable}
        # The crash handler answers any bug as ErrorBody; a bug it stays (the fuzz test fails on any 5xx).
        responses.setdefault("500", _error_response(500))
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _DEFAULT_422:
        schemas.pop(name, None)
    if "HTTPValidationError" in str(doc):
        raise AssertionError("FastAPI's default 422 schema is still referenced")


def _security(doc: dict[str, Any], app: FastAPI, settings: Settings) -> None:
    roles = {(method.lower(), route.path_format): role_of_route(route)
             for route in iter_route_contexts(app.routes) for method in route.methods or ()}
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[API_KEY_SCHEME] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                               "description": key_scheme_description(settings)}
    for path, method, op in _operations(doc):
        role = roles.get((method, path))
        op.pop("security", None)
        if role is None:
            continue
        requirement, codes = access_of(role, settings)
        if requirement:
            op["security"] = requirement
        for code in codes:
            op["responses"].setdefault(str(code), _error_response(code))


def _limit_strings(schema: dict[str, Any], settings: Settings) -> None:
    schema.update(minLength=1, maxLength=settings.max_chars_per_text, pattern=NON_BLANK)


def _text_limits(doc: dict[str, Any], settings: Settings) -> None:
    """The limits check_texts enforces (app/services/predict.py), from the same settings."""
    props = doc["components"]["schemas"]["PredictRequest"]["properties"]
    for name, prop in props.items():
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "string":
                _limit_strings(option, settings)
            elif option.get("type") == "array":
                option.update(minItems=1, maxItems=settings.max_texts_per_request)
                items = option["items"]
                for part in items.get("prefixItems", [items]):
                    _limit_strings(part, settings)
        limits = f"{settings.max_chars_per_text} characters per sentence at most, none blank"
        if name == "text":
            prop["description"] = f"one sentence; {limits}"
        else:
            what = prop.get("description", "sentences")
            prop["description"] = f"{what}; {settings.max_texts_per_request} inputs and {limits}"


def _drop_unreferenced(doc: dict[str, Any]) -> None:
    schemas = doc.get("components", {}).get("schemas", {})
    while True:
        text = json.dumps({"paths": doc["paths"], "schemas": schemas})
        unused = [name for name in schemas if f'"#/components/schemas/{name}"' not in text]
        if not unused:
            return
        for name in unused:
            del schemas[name]
