"""create_app(): the lifespan builds the store, job store, queue client and serving engine once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.fast_predict import FastPredict
from app.api.routes import datasets, health, jobs, latency, predict, reports, ui, variants
from app.errors import install_error_handlers
from app.openapi import install_openapi
from app.services.queue import QueueClient
from app.services.reaper import start_reaper, stop_reaper
from app.serving.engine import ServingEngine
from slimbert.config import Settings, check_exposure, get_settings
from slimbert.jobs import open_job_store
from slimbert.store.bucket import open_variant_store


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_exposure(settings)  # closed by default: no keys, no listening beyond loopback

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_variant_store(settings)
        app.state.settings = settings
        app.state.store = store
        app.state.jobs = open_job_store(settings)
        app.state.queue = QueueClient(settings)
        app.state.engine = ServingEngine(settings, store, app.state.queue)
        start_reaper(app)
        yield
        await stop_reaper(app)
        await app.state.engine.close()

    app = FastAPI(title="SlimBERT", version="0.1.0", lifespan=lifespan,
                  description="Shrink BERT classifiers, serve every variant, and prove what it bought.")
    install_error_handlers(app)
    install_openapi(app, settings)  # security and limits as these settings make them
    # latency before variants: its /variants/{family}/{variant}/latency must not be shadowed.
    for module in (health, jobs, datasets, predict, latency, variants, reports, ui):
        app.include_router(module.router)
    # Valid POST /predict requests skip the framework; the predict route answers the rest (and documents it).
    if settings.serve_fast_path:
        app.add_middleware(FastPredict)
    return app
