"""The manifest that makes a variant directory self-describing (written last, read first)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# Family and variant names become directory names: a strict pattern rules out path traversal.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

Runtime = Literal["torch", "onnxruntime", "bitsandbytes", "torch-inductor"]


def is_valid_name(name: str) -> bool:
    """True when ``name`` is safe to use as a family or variant directory name."""
    return bool(_NAME_RE.match(name)) and ".." not in name


class Technique(BaseModel):
    """How a variant was made from its parent."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class VariantManifest(BaseModel):
    """Everything needed to load, trust and rebuild a stored variant."""

    format_version: int = FORMAT_VERSION
    family: str
    variant: str
    runtime: Runtime
    precision: str
    target_device: Literal["cpu", "gpu", "any"] = "any"
    base_model_id: str
    parent: str | None = None
    technique: Technique
    recipe: dict[str, Any] = Field(default_factory=dict)
    labels: dict[int, str]
    num_parameters: int
    num_layers: int | None = None
    size_bytes: int = 0
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    dev_accuracy: float | None = None
    dev_examples: int | None = None
    job_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    library_versions: dict[str, str | None] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6
