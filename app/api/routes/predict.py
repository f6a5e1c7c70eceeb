from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import require
from app.errors import errors
from app.schemas import NAME_HELP, NOT_DOUBLE_DOT, FamilyQuery, Name, PredictRequest, PredictResponse
from app.services.predict import predict as run_predict
from app.services.predict import server_timing
from app.serving.engine import EngineDep

# With SLIMBERT_SERVE_FAST_PATH (the default) a valid request is answered by app/api/fast_predict.py before it
# gets here, through the same run_predict; this route is what the OpenAPI document describes, and it answers
# every request the fast path hands on (invalid ones, other content types, refused keys).
router = APIRouter(tags=["predict"])
_SERVER_TIMING = {"Server-Timing": {"description": "queue, tokenize, model and total durations in ms",
                                    "schema": {"type": "string"}}}


@router.post("/predict", response_model=PredictResponse, dependencies=[require("predict")],
             responses={200: {"headers": _SERVER_TIMING}, **errors(
                 404, 409, 422, 502, 504,
                 notes={404: "no such variant or family; the hint lists what exists",
                        409: "the variant needs a GPU and no GPU worker is live; the hint names CPU variants",
                        422: "the request is invalid, or the inputs do not suit the variant"})})
async def predict(
    body: PredictRequest, engine: EngineDep,
    variant: Annotated[Name | None, Query(json_schema_extra=NOT_DOUBLE_DOT,
                                          description=f"default: the family's CPU pick; {NAME_HELP}")] = None,
    family: FamilyQuery = None,
) -> Response:
    result = await run_predict(engine, body.all_texts(), family, variant, body.field())
    # Serialized here, once: returned as a model, FastAPI would validate it again on the hot path.
    return Response(result.model_dump_json(), media_type="application/json",
                    headers={"Server-Timing": server_timing(result)})
