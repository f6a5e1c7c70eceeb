"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from slimbert.compression.recipe import PRESETS


class ErrorBody(BaseModel):
    error: str
    detail: Any = None
    hint: str = ""


class CompressRequest(BaseModel):
    """A named preset plus overrides; ``recipe`` fields are those of ``slimbert.compression.recipe.Recipe``."""

    preset: str = Field(default="quick", description=f"one of {sorted(PRESETS)}")
    recipe: dict[str, Any] = Field(default_factory=dict, description="overrides merged onto the preset")
    device: str = Field(default="auto", pattern="^(auto|cpu|gpu)$",
                        description="where training runs: auto prefers a GPU worker, falls back to cpu")
    benchmark: dict[str, Any] | None = Field(
        default_factory=dict,
        description="options of the benchmark that follows the job (fields of POST /jobs/benchmark but "
        "family and variants); null skips it")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    queue: str
    fallback: str | None = None


class PredictRequest(BaseModel):
    texts: list[str] | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.texts is None) == (self.text is None):
            raise ValueError("give exactly one of 'texts' (a list of strings) or 'text' (a string)")
        return self

    def all_texts(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text or ""]


class PredictionOut(BaseModel):
    label: str
    label_id: int
    score: float
    scores: dict[str, float]


class PredictResponse(BaseModel):
    family: str
    variant: str
    runtime: str
    device: str
    predictions: list[PredictionOut]
    latency_ms: float
    model_ms: float
    tokenize_ms: float
