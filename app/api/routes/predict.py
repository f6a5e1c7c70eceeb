from __future__ import annotations

from fastapi import APIRouter, Query, Response

from app.api.deps import CacheDep, SettingsDep, StoreDep, require
from app.schemas import PredictRequest, PredictResponse
from app.services.predict import predict as run_predict
from slimbert.store.manifest import NAME_PATTERN

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse, dependencies=[require("predict")])
def predict(
    body: PredictRequest, response: Response, store: StoreDep, cache: CacheDep, settings: SettingsDep,
    variant: str | None = Query(default=None, pattern=NAME_PATTERN),
    family: str | None = Query(default=None, pattern=NAME_PATTERN),
) -> PredictResponse:
    result = run_predict(body.all_texts(), family, variant, store, cache, settings)
    response.headers["Server-Timing"] = (
        f"tokenize;dur={result.tokenize_ms}, model;dur={result.model_ms}, total;dur={result.latency_ms}"
    )
    return result
