"""The manifest that makes a variant directory self-describing (written last, read first)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from slimbert.records import MetricName

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

    model_config = ConfigDict(populate_by_name=True)

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
    # Measured on the variant's own runtime when it was made. Test is reported; validation is what
    # choices read. Manifests written before the splits call test "dev" (GLUE's dev is our test split).
    test_accuracy: float | None = Field(default=None, validation_alias=AliasChoices("test_accuracy", "dev_accuracy"))
    test_examples: int | None = Field(default=None, validation_alias=AliasChoices("test_examples", "dev_examples"))
    validation_accuracy: float | None = None
    validation_examples: int | None = None
    splits: dict[str, Any] = Field(default_factory=dict, description="sizes, labels and origin of each split")
    # The data: a stored dataset's name and sha256 (None: the embedded GLUE SST-2 default), the task, and
    # the primary metric with every metric measured on each split (accuracy, macro_f1, f1 of the positive class).
    dataset: str | None = None
    dataset_sha256: str | None = None
    task: Literal["single", "pair"] = "single"
    metric: MetricName = "accuracy"
    test_metrics: dict[str, float] = Field(default_factory=dict)
    test_metric_ci95: tuple[float, float] | None = None  # of the primary metric: Wilson, or a seeded bootstrap
    validation_metrics: dict[str, float] = Field(default_factory=dict)
    job_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    library_versions: dict[str, str | None] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6
