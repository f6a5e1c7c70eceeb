"""``dataset.json``: what a stored dataset holds, where it came from, and how its splits look."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DATASET_MANIFEST = "dataset.json"
DATASET_FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "validation", "test")
Task = Literal["single", "pair"]


class ColumnMapping(BaseModel):
    """Which columns of the user's files hold the text, the second text of a pair, the label and the split."""

    model_config = ConfigDict(extra="forbid")

    text_column: str = Field(min_length=1, max_length=200)
    text_pair_column: str | None = Field(default=None, min_length=1, max_length=200,
                                         description="the second sentence of a pair task (paraphrase, entailment)")
    label_column: str = Field(min_length=1, max_length=200)
    split_column: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="with a single file: train, validation or test per row")


class DatasetFile(BaseModel):
    """One original file as the user gave it, kept under ``files/`` in the stored dataset."""

    name: str
    split: str = Field(description="train, validation, test, or 'all' (one file for every split)")
    sha256: str
    bytes: int


class LengthStats(BaseModel):
    """Percentiles of the examples' lengths (nearest rank), in the unit the manifest's ``lengths_in`` names."""

    p50: int
    p90: int
    p99: int
    max: int


class SplitStats(BaseModel):
    rows: int
    labels: dict[str, int] = Field(description="rows per label name")
    lengths: LengthStats


class DatasetManifest(BaseModel):
    """Everything a job needs to trust and describe a stored dataset."""

    format_version: int = DATASET_FORMAT_VERSION
    name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = Field(description="'upload', 'path:<path>' or 'hub:<id>[/<config>]'")
    files: list[DatasetFile] = Field(default_factory=list)
    sha256: str = Field(description="one digest over the stored split files: equal for identical content")
    columns: ColumnMapping
    task: Task
    label_names: list[str] = Field(description="label id i is label_names[i]")
    splits: dict[str, SplitStats]
    splits_given: list[str] = Field(description="the splits that came from the user; jobs carve the others")
    lengths_in: str = Field(description="'whitespace tokens' or 'tokens of <model>' (with its special tokens)")
    size_bytes: int = 0
