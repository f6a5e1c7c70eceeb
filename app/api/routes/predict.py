from __future__ import annotations

from fastapi import APIRouter, Query, Response

from app.api.deps import require
from app.schemas import PredictRequest, PredictResponse
from app.services.predict import predict as run_predict
from app.services.predict import server_timing
from app.serving.engine import EngineDep
from slimbert.store.manifest import NAME_PATTERN

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse, dependencies=[require("predict")])
async def predict(
    body: PredictRequest, engine: EngineDep,
    variant: str | None = Query(default=None, pattern=NAME_PATTERN),
    family: str | None = Query(default=None, pattern=NAME_PATTERN),
) -> Response:
    result = await run_predict(engine, body.all_texts(), family, variant, body.field())
    # Serialized here, once: returned as a model, FastAPI would validate it again on the hot path.
    return Response(result.model_dump_json(), media_type="application/json",
                    headers={"Server-Timing": server_timing(result)})
