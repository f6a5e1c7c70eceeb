"""Request and response models of the HTTP API.

Some request fields stay plain JSON at run time because the server merges or validates them later (a
recipe override is merged onto its preset before ``Recipe`` sees it), yet their OpenAPI schema is the
real one: the ``*Schema`` annotations below lend them the schema of the model that finally validates them.
Limits that come from settings (texts per request, characters per text) are written into the document
by ``app/openapi.py`` from the app's own ``Settings``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from slimbert.benchmark.runner import BenchmarkSpec
from slimbert.compression.presets import PRESETS
from slimbert.compression.recipe import Recipe
from slimbert.data import Text
from slimbert.store.manifest import NAME_PATTERN

# The benchmark after every compression and autotune job: lighter than a standalone one's defaults.
FOLLOW_UP_BENCHMARK: dict[str, Any] = {"batch_sizes": [1, 8, 32], "runs": 10, "warmup": 2}
# Bounds BenchmarkSpec checks in model_post_init, where its own schema cannot show them
# (tests/api/test_openapi.py checks these against BenchmarkSpec itself).
BENCHMARK_BATCH_SIZE = (1, 256)
BENCHMARK_SEQ_LEN = (8, 512)
# Names also refuse '..' (slimbert.store.manifest.is_valid_name); JSON Schema says so without a lookahead.
NOT_DOUBLE_DOT: dict[str, Any] = {"not": {"type": "string", "pattern": r"\.\."}}


def _no_double_dot(name: str) -> str:
    if ".." in name:
        raise ValueError("a name may not contain '..'")
    return name


# The pattern comes before the validator: after it, pydantic could no longer show it in the schema.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN), AfterValidator(_no_double_dot)]
NAME_HELP = "lower-case letters, digits, '.', '_' and '-', at most 64 characters, no '..'"
NamePath = Annotated[Name, Path(description=NAME_HELP, json_schema_extra=NOT_DOUBLE_DOT)]
FamilyQuery = Annotated[Name | None, Query(description="a family; default: the newest",
                                           json_schema_extra=NOT_DOUBLE_DOT)]


class _RecipeOverridesSchema:
    """Documents a recipe override: any subset of ``Recipe``'s fields (every one has a default), nested
    sections merged key by key onto the preset's."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(Recipe.__pydantic_core_schema__)


def _benchmark_spec_schema(handler: GetJsonSchemaHandler) -> JsonSchemaValue:
    """BenchmarkSpec's schema with the bounds its model_post_init enforces (it is changed in place: the
    bounds hold wherever a BenchmarkSpec is validated)."""
    ref = handler(BenchmarkSpec.__pydantic_core_schema__)
    spec = handler.resolve_ref_schema(ref)
    low, high = BENCHMARK_BATCH_SIZE
    spec["properties"]["batch_sizes"]["items"].update(minimum=low, maximum=high)
    for option in spec["properties"]["seq_len"]["anyOf"]:
        if option.get("type") == "integer":
            option.update(minimum=BENCHMARK_SEQ_LEN[0], maximum=BENCHMARK_SEQ_LEN[1])
    return ref


class _BenchmarkSpecSchema:
    @classmethod
    def __get_pydantic_json_schema__(cls, _: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _benchmark_spec_schema(handler)


class _FollowUpBenchmarkSchema:
    """The follow-up benchmark's options: BenchmarkSpec's fields but family and variants."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        spec = copy.deepcopy(handler.resolve_ref_schema(_benchmark_spec_schema(handler)))
        for name in ("family", "variants"):
            spec["properties"].pop(name)
        spec["required"] = [name for name in spec.get("required", []) if name not in ("family", "variants")]
        spec["title"] = "FollowUpBenchmark"
        spec.pop("description", None)
        return {"anyOf": [spec, {"type": "null"}]}


BenchmarkRequest = Annotated[BenchmarkSpec, _BenchmarkSpecSchema]
Device = Literal["auto", "cpu", "gpu"]


class CompressRequest(BaseModel):
    """A named preset plus overrides; ``recipe`` fields are those of ``slimbert.compression.recipe.Recipe``."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(default="quick", description="the named recipe the overrides are merged onto",
                        json_schema_extra={"enum": list[Any](sorted(PRESETS))})
    recipe: Annotated[dict[str, Any], _RecipeOverridesSchema] = Field(
        default_factory=dict,
        description="overrides merged onto the preset: any of Recipe's fields, nested sections merged key by key "
        "(a section set to null is turned off); the defaults shown are Recipe's, the preset's own values apply "
        "to what is not given. Rules across fields (say, precision.targets naming a variant the recipe does not "
        "make), a base_model that does not resolve here, or a dataset not stored answer 422 with the fix")
    device: Device = Field(default="auto", description="where training runs: auto prefers a GPU worker, "
                                                         "falls back to cpu")
    benchmark: Annotated[dict[str, Any] | None, _FollowUpBenchmarkSchema] = Field(
        default_factory=lambda: dict(FOLLOW_UP_BENCHMARK),
        description="options of the benchmark that follows the job (fields of POST /jobs/benchmark but "
        "family and variants); null skips it")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    queue: str
    fallback: str | None = None


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


class PredictRequest(BaseModel):
    """Exactly one of: ``texts`` (sentences), ``text`` (one sentence), ``pairs`` (sentence pairs, for a
    variant trained on a pair task). Each sentence, of a pair too, is held to the per-text limits."""

    # A field given as null counts as absent, as the validator below reads it. The limits on counts and
    # lengths (SLIMBERT_MAX_TEXTS_PER_REQUEST, SLIMBERT_MAX_CHARS_PER_TEXT) are added by app/openapi.py.
    model_config = ConfigDict(json_schema_extra={"oneOf": [_given("texts"), _given("text"), _given("pairs")]})

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


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """200 when ready, 503 (the same body) when Redis or the store is not."""

    redis: bool
    store_writable: bool
    live_queues: list[str] = Field(description="queues some live worker consumes")
    ready: bool


class WorkerInfo(BaseModel):
    """A live worker: its name and queues, plus the capabilities it reported (CPU flags, CUDA, threads,
    library versions; ``error`` when it failed the capabilities command)."""

    model_config = ConfigDict(extra="allow")

    name: str
    queues: list[str] = Field(default_factory=list)


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class LatencyStats(BaseModel):
    """A variant's rolling latency over the last window, and its cache entry when it is loaded."""

    family: str
    variant: str
    window_s: float
    requests: int
    texts: int
    requests_per_s: float
    total_ms: Percentiles
    model_ms: Percentiles
    queue_ms: Percentiles
    p50_ms: float | None = Field(description="total_ms.p50")
    p95_ms: float | None
    p99_ms: float | None
    loaded: bool
    memory_mb_estimate: float | None = None
    rss_growth_mb: float | None = None
    load_ms: float | None = None
    loaded_at: float | None = None
    runtime: str | None = None
    device: str | None = None
