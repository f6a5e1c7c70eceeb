"""The one settings object. Nothing else in the project reads the environment.

Every field can be set as an environment variable prefixed ``SLIMBERT_`` (for example
``SLIMBERT_REDIS_URL``) or in a ``.env`` file; ``.env.example`` documents each one with its default.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Role = Literal["admin", "predict"]

_STORE_URL_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>\S*?))?/?$")


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); the prefix may be empty."""
    match = _STORE_URL_RE.match(url)
    if match is None:
        raise ValueError(f"store_url must look like s3://<bucket>[/<prefix>] (the bucket in lower case), not {url!r}")
    prefix = (match["prefix"] or "").rstrip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"store_url has an empty or relative part in its prefix: {url!r}")
    return match["bucket"], prefix


class Settings(BaseSettings):
    """Validated configuration for the API, the workers and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="SLIMBERT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Queue and storage
    redis_url: str = "redis://127.0.0.1:6379/0"
    store_dir: Path = PROJECT_ROOT / "models_store"
    # Many hosts, one store: s3://bucket/prefix keeps variants, reports, datasets and job records in an
    # S3-compatible bucket, and store_dir (and datasets_dir) become this host's cache. None: all on local disk.
    # Credentials and region come from boto3's chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, a profile, a role).
    store_url: str | None = None
    # The endpoint of an S3-compatible server (minio, moto): http://minio:9000. None: AWS S3.
    s3_endpoint_url: str | None = None
    # The serving path asks the bucket which variants changed at most this often (a republish on another host
    # is served within it); jobs and a name not seen yet always read the bucket at once.
    store_refresh_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    # Job records live on disk beside the store so they survive Redis being restarted or emptied.
    jobs_dir: Path | None = None
    sst2_dir: Path | None = PROJECT_ROOT.parent / "shared" / "data" / "sst2"
    # Stored datasets (POST /datasets): immutable folders beside the variants, one per name.
    datasets_dir: Path | None = None
    # A dataset given as {"path": ...} must lie under one of these roots (files, folders, save_to_disk).
    allowed_data_roots: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT, PROJECT_ROOT.parent / "shared"])
    max_dataset_mb: int = Field(default=200, ge=1, le=100_000, description="largest upload, all files together")
    # Extra model aliases: hub id -> local directory, resolved before any network access.
    model_aliases: dict[str, Path] = Field(default_factory=dict)
    # Never reach the Hugging Face hub: resolve ids to local files only.
    offline: bool = True
    # A base model given as a local path must lie under one of these roots.
    allowed_model_roots: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT, PROJECT_ROOT.parent])
    default_model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    # A user's checkpoint is data, never code: pickled weights (.bin, .pt) can run code when unpickled, so
    # only safetensors load unless this is set for checkpoints you trust. trust_remote_code is never set.
    allow_pickled_checkpoints: bool = False

    # Queue and device policy
    gpu_fallback_to_cpu: bool = True
    worker_ping_ttl_s: float = Field(default=5.0, ge=0.0, le=300.0)
    worker_ping_timeout_s: float = Field(default=1.0, gt=0.0, le=30.0)
    # A worker's job is visible to others after this long without an ack (acks_late redelivery).
    visibility_timeout_s: int = Field(default=4 * 3600, ge=60)
    # Lost jobs: the API's reaper requeues a running job whose worker has not answered the capabilities
    # broadcast for reaper_grace_s, at most job_max_attempts starts in all, then fails it with a hint.
    reaper_interval_s: float = Field(default=15.0, ge=0.0, le=3600.0, description="0 turns the reaper off")
    reaper_grace_s: float = Field(default=60.0, ge=0.0, le=86_400.0)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    # Celery time limits of every task: the soft one fails the job with a hint, the hard one kills the task.
    # Keep them below visibility_timeout_s, or Redis hands a still-running job to a second worker.
    task_soft_time_limit_s: int = Field(default=12_600, ge=1)
    task_time_limit_s: int = Field(default=13_800, ge=1)

    # Access: key -> role. Jobs and deletes always need an admin key when any key is set.
    api_keys: dict[str, Role] = Field(default_factory=dict)
    # The address the API listens on. Beyond loopback the API refuses to start without api_keys, and a
    # job submitted over a non-loopback interface without keys is refused: closed by default.
    api_host: str = "127.0.0.1"
    open_predict: bool = True

    # Limits
    max_texts_per_request: int = Field(default=64, ge=1, le=4096)
    max_chars_per_text: int = Field(default=2000, ge=1, le=100_000)
    max_train_examples: int = Field(default=67_349, ge=1)
    min_free_disk_mb: int = Field(default=200, ge=0)

    # Serving
    predictor_cache_size: int = Field(default=4, ge=1, le=64)
    # ONNX Runtime thread spinning: faster for a lone ONNX model, but it starves torch variants served
    # beside it; off by default (measured in docs/PERFORMANCE.md).
    ort_allow_spinning: bool = False
    inference_threads: int = Field(default=0, ge=0, le=256, description="0 means torch's default")
    # The API sizes intra-op threads as inference_threads, or (when 0) CPU cores // (serve_forward_workers x
    # api_workers),
    # so the forward threads never ask for more cores than the machine has.
    predictor_cache_max_mb: int = Field(default=2048, ge=1, le=1_000_000,
                                        description="memory budget of loaded variants, by size on disk")
    serve_max_batch: int = Field(default=32, ge=1, le=4096, description="most texts in one forward pass")
    # Padded tokens of one forward pass (texts x the longest, estimated from characters): long texts
    # make smaller batches, so one batch's time and memory stay bounded whatever the lengths.
    serve_max_batch_tokens: int = Field(default=4096, ge=16, le=1_000_000,
                                        description="most padded tokens in one forward pass")
    # Continuous batching: an idle model starts at once, batches form while a forward pass runs. A wait
    # above 0 makes an idle model hold a lone request that long for company (the old micro-batching).
    serve_max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0,
                                     description="how long an idle model waits for more requests to join")
    # Runtimes whose requests are not batched (max batch 1). Empty by default: on a quiet machine with ONNX
    # Runtime's spinning off, batching raised throughput for INT8 (1.22x) and fp32 (2.04x)
    # (docs/PERFORMANCE.md, Serving); an earlier run under heavy load had suggested the opposite for INT8.
    serve_unbatched_runtimes: list[str] = Field(default_factory=list)
    serve_forward_workers: int = Field(default=1, ge=1, le=64,
                                       description="forward passes that may run at once, all variants together")
    # uvicorn worker processes of the API (python -m app.serve); each has its own cache and batchers, and
    # intra-op threads are shared out so all processes together ask for no more threads than cores.
    api_workers: int = Field(default=1, ge=1, le=64, description="API processes")
    serve_warmup: bool = True
    # Valid POST /predict requests are answered by a plain ASGI handler in front of FastAPI (same models,
    # same service function, same errors); false sends every request through the FastAPI route.
    serve_fast_path: bool = True
    remote_predict_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    latency_window_s: float = Field(default=60.0, gt=0.0, le=3600.0)
    latency_stream_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @field_validator("store_url", "s3_endpoint_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # Compose passes "${SLIMBERT_STORE_URL:-}": an unset variable arrives as an empty string.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_store_url(value)  # raises with the expected form
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("s3_endpoint_url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.store_dir = self.store_dir.expanduser().resolve()
        if self.jobs_dir is None:
            self.jobs_dir = self.store_dir / ".jobs"
        self.jobs_dir = self.jobs_dir.expanduser().resolve()
        if self.sst2_dir is not None:
            self.sst2_dir = self.sst2_dir.expanduser().resolve()
        if self.datasets_dir is None:
            self.datasets_dir = self.store_dir / ".datasets"
        self.datasets_dir = self.datasets_dir.expanduser().resolve()
        self.allowed_data_roots = [p.expanduser().resolve() for p in self.allowed_data_roots]
        self.allowed_model_roots = [p.expanduser().resolve() for p in self.allowed_model_roots]
        return self

    @model_validator(mode="after")
    def _time_limits(self) -> Settings:
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("task_time_limit_s must be greater than task_soft_time_limit_s")
        return self

    @property
    def dataset_dir(self) -> Path:
        """Where stored datasets are kept (never None after validation)."""
        assert self.datasets_dir is not None
        return self.datasets_dir

    @property
    def job_dir(self) -> Path:
        """Where job records are kept (never None after validation)."""
        assert self.jobs_dir is not None
        return self.jobs_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and validated."""
    return Settings()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for 0.0.0.0, :: and every other address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse an API that listens beyond loopback with no key: anyone who can reach it could queue jobs."""
    if not settings.api_keys and not is_loopback(settings.api_host):
        raise ValueError(
            f"the API would listen on {settings.api_host} with no API keys, so anyone who reaches it could "
            "submit jobs; set SLIMBERT_API_KEYS (for example '{\"<a long random key>\": \"admin\"}'), or listen on "
            "127.0.0.1 (SLIMBERT_API_HOST)")
