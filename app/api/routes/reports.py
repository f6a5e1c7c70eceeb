from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from app.api.deps import StoreDep, require
from slimbert.report.showdown import showdown_rows, to_csv, to_markdown
from slimbert.store.manifest import NAME_PATTERN

router = APIRouter(prefix="/reports", tags=["reports"])


@router.get("/showdown", dependencies=[require("predict")], response_model=None)
def showdown(
    store: StoreDep,
    family: str | None = Query(default=None, pattern=NAME_PATTERN),
    format: Literal["json", "markdown", "csv"] = "json",
) -> dict[str, Any] | PlainTextResponse:
    fam = family or store.newest_family()
    rows = showdown_rows(store.manifests(fam))
    if format == "markdown":
        return PlainTextResponse(to_markdown(rows, fam), media_type="text/markdown")
    if format == "csv":
        return PlainTextResponse(to_csv(rows), media_type="text/csv")
    return {"family": fam, "rows": rows}
