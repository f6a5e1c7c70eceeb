"""The API's launcher: uvicorn on ``app.main:create_app`` with ``SLIMBERT_API_WORKERS`` processes.

    python -m app.serve --factory app.main:create_app --host 127.0.0.1 --port 8000

Arguments go to uvicorn unchanged; ``--workers`` is added from the settings unless given. Each worker
process builds its own app (lifespan: store, predictor cache, batchers, compute threads), and with
``SLIMBERT_INFERENCE_THREADS=0`` each sizes its intra-op threads as cores // (forward workers x API
workers), so the processes together never ask for more compute threads than cores. ``./run.sh up``,
the compose ``api`` service and the CPU image all start the API through here.
"""

from __future__ import annotations

import sys

import uvicorn

from slimbert.config import get_settings


def uvicorn_args(argv: list[str], workers: int) -> list[str]:
    """``argv`` with ``--workers`` from the settings unless the caller gave one."""
    if any(a == "--workers" or a.startswith("--workers=") for a in argv):
        return list(argv)
    return [*argv, "--workers", str(workers)]


def main(argv: list[str] | None = None) -> None:
    args = uvicorn_args(sys.argv[1:] if argv is None else argv, get_settings().api_workers)
    uvicorn.main.main(args=args, prog_name="python -m app.serve")


if __name__ == "__main__":
    main()
