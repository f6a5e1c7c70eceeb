"""Request models of /datasets and the OpenAPI description of the upload."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas import NOT_DOUBLE_DOT, Name
from slimbert.datasets import ACCEPTED, ColumnMapping


class DatasetFields(BaseModel):
    """The fields of POST /datasets besides the data itself (multipart form fields, or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="the stored dataset's name (immutable)",
                       json_schema_extra=NOT_DOUBLE_DOT)
    text_column: str = Field(min_length=1, max_length=200)
    text_pair_column: str | None = Field(default=None, min_length=1, max_length=200)
    label_column: str = Field(min_length=1, max_length=200)
    split_column: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=500,
                              description="a model id or path: token lengths in its tokenizer's tokens")

    def columns(self) -> ColumnMapping:
        return ColumnMapping(text_column=self.text_column, text_pair_column=self.text_pair_column,
                             label_column=self.label_column, split_column=self.split_column)


def _given(field: str) -> dict[str, Any]:
    """JSON Schema for "``field`` is present and not null" (the validators read null as absent)."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


class DatasetFromSource(DatasetFields):
    """JSON body of POST /datasets: data named by a path under the allowed roots, or a cached hub dataset."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [_given("path"), _given("hub_id")],
        "anyOf": [{"not": _given("config")}, _given("hub_id")]})

    path: str | None = Field(default=None, min_length=1, max_length=4096,
                             description="a file, a folder of train/validation/test files, or a save_to_disk folder")
    hub_id: str | None = Field(default=None, min_length=1, max_length=200,
                               description="a hub dataset id, read from the local datasets cache only")
    config: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetFromSource:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of 'path' or 'hub_id' (or upload files as multipart/form-data)")
        if self.config is not None and self.hub_id is None:
            raise ValueError("'config' goes with 'hub_id'")
        return self


FILE_FIELDS = ("file", "train", "validation", "test")


def _upload_schema() -> dict[str, Any]:
    text = DatasetFields.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    # The rule on files (one 'file' for every split, or 'train' with 'validation' and 'test' optional, never
    # both), and the name's "no '..'", are said in words: schemathesis 4.x's coverage phase cannot combine a
    # oneOf or not with binary parts ("Unsupported type: 'Binary'").
    text["properties"]["name"].pop("not")
    return {"type": "object", "required": text.get("required", []), "additionalProperties": False,
            "description": "the fields, and the data as 'file' (every split), or as 'train' plus optional "
                           "'validation' and 'test', never both",
            "properties": text["properties"] | {
                "file": binary | {"description": f"one file for every split ({ACCEPTED})"},
                "train": binary | {"description": "the train split (instead of 'file')"},
                "validation": binary, "test": binary}}


UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _upload_schema()},
    "application/json": {"schema": DatasetFromSource.model_json_schema()},
}}}

# What the dataset routes' error statuses mean for them (``app.errors.errors(..., notes=DATASET_ERRORS)``).
DATASET_ERRORS = {404: "no such dataset; the hint lists what exists",
                  409: "the name is taken, or variants use the dataset",
                  413: "the upload is over SLIMBERT_MAX_DATASET_MB", 415: "neither multipart/form-data nor JSON",
                  422: "the data or the request is invalid: the detail names the file, row and column"}
