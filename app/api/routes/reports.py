from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from app.api.deps import StoreDep, require
from app.services.reports import chart_bytes, render, showdown
from slimbert.report.figures import ChartName
from slimbert.store.manifest import NAME_PATTERN

router = APIRouter(prefix="/reports", tags=["reports"])
Family = Annotated[str | None, Query(pattern=NAME_PATTERN)]
BatchSize = Annotated[int, Query(ge=1, le=256, description="the batch size of the latency columns")]
Gate = Annotated[float, Query(gt=0, le=1.5, description="accuracy gate, a fraction of baseline accuracy")]
_MEDIA = {"markdown": "text/markdown", "csv": "text/csv"}


@router.get("/showdown", dependencies=[require("predict")], response_model=None)
def get_showdown(
    store: StoreDep, family: Family = None, format: Literal["json", "markdown", "csv", "html"] = "json",
    batch_size: BatchSize = 1, gate: Gate = 0.99,
) -> dict[str, Any] | Response:
    report = showdown(store, family, batch_size, gate)
    if format == "json":
        return report.model_dump(mode="json")
    text = render(report, store, format)
    return HTMLResponse(text) if format == "html" else PlainTextResponse(text, media_type=_MEDIA[format])


@router.get("/showdown/charts/{name}.{fmt}", dependencies=[require("predict")], response_class=Response)
def get_chart(
    store: StoreDep, name: ChartName, fmt: Literal["svg", "png"], family: Family = None,
    batch_size: BatchSize = 1, gate: Gate = 0.99,
) -> Response:
    data = chart_bytes(store, family, name, fmt, batch_size, gate)
    return Response(data, media_type="image/svg+xml" if fmt == "svg" else "image/png")
