"""The typed compression recipe, validated up front, with named presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slimbert.compression.finetune import FinetuneConfig
from slimbert.store.manifest import NAME_PATTERN

LayerStrategy = Literal["sensitivity", "top", "alternate"]
PresetName = Literal["quick", "tiny"]


class LayerPruning(BaseModel):
    """Physical removal of encoder layers, followed by a short re-finetune."""

    model_config = ConfigDict(extra="forbid")

    drop: int = Field(default=2, ge=1, le=47, description="how many encoder layers to remove")
    strategy: LayerStrategy = "sensitivity"
    refinetune: FinetuneConfig = Field(default_factory=FinetuneConfig)


class Int8Dynamic(BaseModel):
    """ONNX Runtime dynamic INT8 of the pruned model."""

    model_config = ConfigDict(extra="forbid")

    per_channel: bool = False
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = "auto"


class Recipe(BaseModel):
    """Everything a compression job does, with every default resolved."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    family: str | None = Field(default=None, pattern=NAME_PATTERN)
    train_examples: int | None = Field(default=8000, ge=8, description="SST-2 train subset; null = all")
    dev_examples: int | None = Field(default=None, ge=8, description="SST-2 dev subset; null = all 872")
    data_seed: int = 0
    finetune: FinetuneConfig | None = Field(default_factory=FinetuneConfig)
    layer_pruning: LayerPruning | None = Field(default_factory=LayerPruning)
    int8_dynamic: Int8Dynamic | None = Field(default_factory=Int8Dynamic)
    eval_max_length: int = Field(default=128, ge=8, le=512)

    @model_validator(mode="after")
    def _int8_needs_source(self) -> Recipe:
        if self.int8_dynamic is not None and self.layer_pruning is None and self.finetune is None:
            raise ValueError("int8_dynamic needs a trained model: enable finetune or layer_pruning")
        return self

    def family_name(self) -> str:
        """The family directory: given, or derived from the base model's name."""
        if self.family:
            return self.family
        stem = self.base_model.rstrip("/").split("/")[-1].lower()
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
        return f"{safe[:56] or 'model'}-sst2"


PRESETS: dict[str, dict[str, object]] = {
    # The embedded MiniLM in a few minutes on 2 cores.
    "quick": {},
    # For tests: a few dozen sentences, one short epoch each.
    "tiny": {
        "train_examples": 48,
        "dev_examples": 32,
        "finetune": {"epochs": 1, "batch_size": 16, "max_length": 32},
        "layer_pruning": {
            "drop": 1, "strategy": "top", "refinetune": {"epochs": 1, "batch_size": 16, "max_length": 32},
        },
    },
}


def build_recipe(preset: str | None = None, overrides: dict[str, object] | None = None) -> Recipe:
    """A preset's recipe with the caller's overrides merged on top (nested dicts merge)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    merged = _deep_merge(dict(PRESETS.get(preset or "quick", {})), overrides or {})
    return Recipe.model_validate(merged)


def _deep_merge(base: dict[str, object], extra: dict[str, object]) -> dict[str, object]:
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            out[key] = _deep_merge(current, value)
        else:
            out[key] = value
    return out
