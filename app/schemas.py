"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from slimbert.compression.presets import PRESETS
from slimbert.data import Text

# The benchmark after every compression and autotune job: lighter than a standalone one's defaults.
FOLLOW_UP_BENCHMARK: dict[str, Any] = {"batch_sizes": [1, 8, 32], "runs": 10, "warmup": 2}


class CompressRequest(BaseModel):
    """A named preset plus overrides; ``recipe`` fields are those of ``slimbert.compression.recipe.Recipe``."""

    preset: str = Field(default="quick", description=f"one of {sorted(PRESETS)}")
    recipe: dict[str, Any] = Field(default_factory=dict, description="overrides merged onto the preset")
    device: str = Field(default="auto", pattern="^(auto|cpu|gpu)$",
                        description="where training runs: auto prefers a GPU worker, falls back to cpu")
    benchmark: dict[str, Any] | None = Field(
        default_factory=lambda: dict(FOLLOW_UP_BENCHMARK),
        description="options of the benchmark that follows the job (fields of POST /jobs/benchmark but "
        "family and variants); null skips it")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    queue: str
    fallback: str | None = None


class PredictRequest(BaseModel):
    """Exactly one of: ``texts`` (sentences), ``text`` (one sentence), ``pairs`` (sentence pairs, for a
    variant trained on a pair task). Each sentence, of a pair too, is held to the per-text limits."""

    texts: list[str] | None = None
    text: str | None = None
    pairs: list[tuple[str, str]] | None = Field(
        default=None, description="sentence pairs [[first, second], ...], for variants of pair tasks")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        given = [name for name in ("texts", "text", "pairs") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'texts' (a list of strings), 'text' (a string) or 'pairs' "
                             "(a list of [first, second] string pairs)")
        return self

    def field(self) -> str:
        """The field the inputs came in, for error messages."""
        return "pairs" if self.pairs is not None else "texts"

    def all_texts(self) -> list[Text]:
        if self.pairs is not None:
            return [(a, b) for a, b in self.pairs]
        return list(self.texts) if self.texts is not None else [self.text or ""]


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
    latency_ms: float = Field(description="wall time in the API, the same as total_ms")
    model_ms: float = Field(description="the forward pass of the batch this request rode in, tokenization excluded")
    tokenize_ms: float
    queue_ms: float = Field(default=0.0, description="waiting for the batch to form and the model to be free")
    total_ms: float = 0.0
    batch_texts: int = Field(default=0, description="texts in the forward pass (all requests of the batch)")
    batch_requests: int = Field(default=1, description="requests that shared the forward pass")
    ran_on: str = Field(default="api", description="'api' (this process) or 'gpu-worker:<host>'")
