"""Dependency aliases. Tests swap the underlying providers with ``dependency_overrides``.

Every dependency here is ``async def``, though none awaits: FastAPI runs a plain ``def`` dependency in
its thread pool, and three such hops per request (settings, engine, the key check) cost the hot
``/predict`` path a thread hand-off each, on machines where the compute thread already owns the cores.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from app.services.queue import QueueClient
from slimbert.config import Role, Settings, is_loopback
from slimbert.errors import SlimBertError
from slimbert.jobs import JobStore
from slimbert.store.store import VariantStore


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> VariantStore:
    return request.app.state.store


async def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def get_queue(request: Request) -> QueueClient:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[VariantStore, Depends(get_store)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
QueueDep = Annotated[QueueClient, Depends(get_queue)]

API_KEY_SCHEME = "APIKeyHeader"
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name=API_KEY_SCHEME)


class Unauthorized(SlimBertError):
    status_code = 401


class Forbidden(SlimBertError):
    status_code = 403


def _beyond_loopback(scope: Mapping[str, Any]) -> bool:
    """Whether the request arrived on a network interface other than loopback (the socket's own address:
    uvicorn --host 0.0.0.0 accepts on every interface). In-process test transports have no address."""
    server = scope.get("server")
    if not server:
        return False
    host = str(server[0])
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # not a socket address: an in-process ASGI transport
    return not is_loopback(host)


def _role_of(key: str | None, settings: Settings) -> Role | None:
    if not key:
        return None
    for known, role in settings.api_keys.items():
        # Constant-time comparison: response timing must not leak key prefixes.
        if hmac.compare_digest(known.encode(), key.encode()):
            return role
    return None


def check_access(role: Role, settings: Settings, key: str | None, scope: Mapping[str, Any]) -> None:
    """Admit a call that needs ``role`` (admin also admits everything), or raise 401/403. The one access
    rule: the ``require`` dependency and the plain-ASGI ``/predict`` (``app/api/fast_predict.py``) call it."""
    if not settings.api_keys:
        if role == "admin" and _beyond_loopback(scope):
            raise Unauthorized("this API has no keys and the request came over a non-loopback interface",
                               hint="set SLIMBERT_API_KEYS with an admin key, or call from 127.0.0.1")
        return  # no keys configured: a local, single-user setup
    if role == "predict" and settings.open_predict:
        return
    found = _role_of(key, settings)
    if found is None:
        raise Unauthorized("missing or unknown API key", hint="send it in the X-API-Key header")
    if found != role and found != "admin":
        raise Forbidden(f"this key has role {found!r}; this call needs {role!r}",
                        hint="use a key with the right role")


def require(role: Role) -> Any:
    """A dependency that admits ``role`` (admin also admits everything)."""

    async def check(request: Request, settings: SettingsDep, key: Annotated[str | None, Depends(_api_key)]) -> None:
        check_access(role, settings, key, request.scope)

    check.required_role = role  # type: ignore[attr-defined]  # read by role_of_route for the OpenAPI document
    return Depends(check)


def role_of_route(route: object) -> Role | None:
    """The role a route's ``require(...)`` dependency admits, or None for an open route."""
    for dependency in getattr(route, "dependencies", None) or []:
        role: Role | None = getattr(dependency.dependency, "required_role", None)
        if role is not None:
            return role
    return None


# What OpenAPI says about access mirrors ``check`` above: a key is required only where check reads one.
def access_of(role: Role, settings: Settings) -> tuple[list[dict[str, list[str]]], list[int]]:
    """The OpenAPI security requirement of a route that admits ``role`` under ``settings``, and the
    status codes access control can answer on it."""
    if not settings.api_keys:
        # No key is read, so none is declared; admin calls are still refused over a non-loopback interface.
        return [], [401] if role == "admin" else []
    if role == "predict" and settings.open_predict:
        return [], []
    # Roles are admin and predict, and admin admits everything: only an admin call can meet a wrong role.
    return [{API_KEY_SCHEME: []}], [401, 403] if role == "admin" else [401]


def key_scheme_description(settings: Settings) -> str:
    if not settings.api_keys:
        return ("Not in use on this server: SLIMBERT_API_KEYS is empty, so it serves loopback callers without "
                "keys (it refuses to listen beyond loopback), and no operation declares this scheme. Calls that "
                "need the admin role are refused with 401 if they arrive over another interface anyway.")
    open_note = ("; read and predict calls are open without a key (SLIMBERT_OPEN_PREDICT)" if settings.open_predict
                 else "")
    return ("A key from SLIMBERT_API_KEYS: role 'admin' may do everything, role 'predict' the read and predict "
            f"calls{open_note}. An operation that lists this scheme answers 401 without a known key.")
