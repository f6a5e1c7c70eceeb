"""The one settings object. Nothing else in the project reads the environment.

Every field can be set as an environment variable prefixed ``SLIMBERT_`` (for example
``SLIMBERT_REDIS_URL``) or in a ``.env`` file; ``.env.example`` documents each one with its default.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Role = Literal["admin", "predict"]


class Settings(BaseSettings):
    """Validated configuration for the API, the workers and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="SLIMBERT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Queue and storage
    redis_url: str = "redis://127.0.0.1:6379/0"
    store_dir: Path = PROJECT_ROOT / "models_store"
    # Job records live on disk beside the store so they survive Redis being restarted or emptied.
    jobs_dir: Path | None = None
    sst2_dir: Path | None = PROJECT_ROOT.parent / "shared" / "data" / "sst2"
    # Extra model aliases: hub id -> local directory, resolved before any network access.
    model_aliases: dict[str, Path] = Field(default_factory=dict)
    # Never reach the Hugging Face hub: resolve ids to local files only.
    offline: bool = True
    # A base model given as a local path must lie under one of these roots.
    allowed_model_roots: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT, PROJECT_ROOT.parent])
    default_model_id: str = "sentence-transformers/all-MiniLM-L6-v2"

    # Queue and device policy
    gpu_fallback_to_cpu: bool = True
    worker_ping_ttl_s: float = Field(default=5.0, ge=0.0, le=300.0)
    worker_ping_timeout_s: float = Field(default=1.0, gt=0.0, le=30.0)
    # A worker's job is visible to others after this long without an ack (acks_late redelivery).
    visibility_timeout_s: int = Field(default=4 * 3600, ge=60)

    # Access: key -> role. Jobs and deletes always need an admin key when any key is set.
    api_keys: dict[str, Role] = Field(default_factory=dict)
    open_predict: bool = True

    # Limits
    max_texts_per_request: int = Field(default=64, ge=1, le=4096)
    max_chars_per_text: int = Field(default=2000, ge=1, le=100_000)
    max_train_examples: int = Field(default=67_349, ge=1)
    min_free_disk_mb: int = Field(default=200, ge=0)

    # Serving
    predictor_cache_size: int = Field(default=4, ge=1, le=64)
    inference_threads: int = Field(default=0, ge=0, le=256, description="0 means torch's default")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.store_dir = self.store_dir.expanduser().resolve()
        if self.jobs_dir is None:
            self.jobs_dir = self.store_dir / ".jobs"
        self.jobs_dir = self.jobs_dir.expanduser().resolve()
        if self.sst2_dir is not None:
            self.sst2_dir = self.sst2_dir.expanduser().resolve()
        self.allowed_model_roots = [p.expanduser().resolve() for p in self.allowed_model_roots]
        return self

    @property
    def job_dir(self) -> Path:
        """Where job records are kept (never None after validation)."""
        assert self.jobs_dir is not None
        return self.jobs_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and validated."""
    return Settings()
