"""The peer: a variant folder served the way a user would write it, with FastAPI and transformers'
``pipeline("text-classification")`` (a measurement aid for bench_serving.py, not part of SlimBERT;
it reads no SlimBERT setting on purpose).

    .venv/bin/python benchmarks/peer_server.py models_store/<family>/baseline-fp32 --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Body(BaseModel):
    text: str


def make_app(model_dir: str) -> FastAPI:
    classify = pipeline("text-classification", model=model_dir, device="cpu")
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/predict")
    def predict(body: Body) -> list[dict[str, Any]]:
        return classify(body.text)

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args()
    uvicorn.run(make_app(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
