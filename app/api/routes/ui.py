"""A small page: live latency per variant (from /stream/latency) and a box to try a prediction."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).resolve().parents[2] / "static" / "index.html"


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui")
def ui() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
