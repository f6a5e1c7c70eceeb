"""Choosing a variant and running a prediction through the predictor cache."""

from __future__ import annotations

import time

from app.schemas import PredictionOut, PredictResponse
from app.serving.cache import PredictorCache
from slimbert.config import Settings
from slimbert.errors import InvalidInput, VariantNotFound
from slimbert.store.store import VariantStore

# Without a named variant, serve the first of these that the family has: the smallest, fastest
# CPU form first (the showdown's recommendation replaces this order once it exists).
DEFAULT_ORDER = ("pruned-int8", "baseline-int8", "pruned-fp32", "baseline-fp32")


def choose_variant(store: VariantStore, family: str | None, variant: str | None) -> tuple[str, str]:
    fam = family or store.newest_family()
    if variant:
        store.manifest(fam, variant)  # 404 with the list of what exists
        return fam, variant
    names = {m.variant for m in store.manifests(fam)}
    for name in DEFAULT_ORDER:
        if name in names:
            return fam, name
    if names:
        return fam, sorted(names)[0]
    raise VariantNotFound(f"family {fam} has no variants", hint="run POST /jobs/compress")


def check_texts(texts: list[str], settings: Settings) -> None:
    if not texts:
        raise InvalidInput("texts is empty", hint="send at least one text")
    if len(texts) > settings.max_texts_per_request:
        raise InvalidInput(f"texts has {len(texts)} items", hint=f"send at most {settings.max_texts_per_request}")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"texts[{i}] is empty", hint="send non-blank texts")
        if len(text) > settings.max_chars_per_text:
            raise InvalidInput(f"texts[{i}] has {len(text)} characters",
                                hint=f"send at most {settings.max_chars_per_text} characters per text")


def predict(
    texts: list[str], family: str | None, variant: str | None,
    store: VariantStore, cache: PredictorCache, settings: Settings,
) -> PredictResponse:
    start = time.perf_counter()
    check_texts(texts, settings)
    fam, var = choose_variant(store, family, variant)
    predictor = cache.get((fam, var))
    out = predictor.predict(texts)
    return PredictResponse(
        family=fam, variant=var, runtime=predictor.runtime, device=predictor.device,
        predictions=[PredictionOut(**p.__dict__) for p in out.predictions],
        latency_ms=round((time.perf_counter() - start) * 1000, 3),
        model_ms=round(out.model_ms, 3), tokenize_ms=round(out.tokenize_ms, 3),
    )
