"""create_app(): the lifespan builds the store, job store, queue client and predictor cache once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.routes import health, jobs, predict, reports, variants
from app.errors import install_error_handlers
from app.services.queue import QueueClient
from app.serving.cache import PredictorCache
from slimbert.config import Settings, get_settings
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.jobs import JobStore
from slimbert.store.store import VariantStore


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = VariantStore(settings.store_dir, min_free_mb=settings.min_free_disk_mb)

        def load(key: tuple[str, str]) -> Predictor:
            manifest = store.manifest(*key)
            store.verify(manifest)
            return load_variant(manifest, store.variant_dir(*key), "cpu",
                                threads=settings.inference_threads or None)

        app.state.settings = settings
        app.state.store = store
        app.state.jobs = JobStore(settings.job_dir)
        app.state.queue = QueueClient(settings)
        app.state.cache = PredictorCache(settings.predictor_cache_size, load)
        yield

    app = FastAPI(title="SlimBERT", version="0.1.0", lifespan=lifespan,
                  description="Shrink BERT classifiers, serve every variant, and prove what it bought.")
    install_error_handlers(app)
    for module in (health, jobs, predict, variants, reports):
        app.include_router(module.router)
    return app

