from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from app.api.deps import StoreDep, require
from app.errors import errors
from app.schemas import FamilyQuery
from app.services.reports import chart_bytes, render, showdown
from slimbert.records import Showdown
from slimbert.report.figures import ChartName

router = APIRouter(prefix="/reports", tags=["reports"])
BatchSize = Annotated[int, Query(ge=1, le=256, description="the batch size of the latency columns")]
Gate = Annotated[float, Query(gt=0, le=1.5, description="accuracy gate, a fraction of baseline accuracy")]
_MEDIA = {"markdown": "text/markdown", "csv": "text/csv"}
_TEXT = {"schema": {"type": "string"}}
_NOT_FOUND = {404: "the store has no variants, or the family has none; the hint lists the families"}


@router.get("/showdown", dependencies=[require("predict")], response_model=Showdown,
            responses={200: {"description": "the showdown: JSON, or the same table as markdown, CSV or an HTML page "
                                            "with its charts (format)",
                             "content": {"text/markdown": _TEXT, "text/csv": _TEXT, "text/html": _TEXT}},
                       **errors(404, 422, notes=_NOT_FOUND)})
def get_showdown(
    store: StoreDep, family: FamilyQuery = None, format: Literal["json", "markdown", "csv", "html"] = "json",
    batch_size: BatchSize = 1, gate: Gate = 0.99,
) -> Showdown | Response:
    report = showdown(store, family, batch_size, gate)
    if format == "json":
        return report
    text = render(report, store, format)
    return HTMLResponse(text) if format == "html" else PlainTextResponse(text, media_type=_MEDIA[format])


@router.get("/showdown/charts/{name}.{fmt}", dependencies=[require("predict")], response_class=Response,
            responses={200: {"description": "the chart", "content": {
                "image/svg+xml": _TEXT, "image/png": {"schema": {"type": "string", "format": "binary"}}}},
                **errors(404, 422, notes={404: _NOT_FOUND[404] + "; or no data for this chart yet"})})
def get_chart(
    store: StoreDep, name: ChartName, fmt: Literal["svg", "png"], family: FamilyQuery = None,
    batch_size: BatchSize = 1, gate: Gate = 0.99,
) -> Response:
    data = chart_bytes(store, family, name, fmt, batch_size, gate)
    return Response(data, media_type="image/svg+xml" if fmt == "svg" else "image/png")
