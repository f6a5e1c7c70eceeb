"""Request models of /datasets, the error body, and the OpenAPI description of the upload."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slimbert.datasets import ACCEPTED, ColumnMapping
from slimbert.store.manifest import NAME_PATTERN


class ErrorBody(BaseModel):
    """Every error the API answers: what went wrong (``error``, ``detail``) and what to do (``hint``)."""

    error: str
    detail: Any
    hint: str


class DatasetFields(BaseModel):
    """The fields of POST /datasets besides the data itself (multipart form fields, or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="the stored dataset's name (immutable)")
    text_column: str = Field(min_length=1, max_length=200)
    text_pair_column: str | None = Field(default=None, min_length=1, max_length=200)
    label_column: str = Field(min_length=1, max_length=200)
    split_column: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=500,
                              description="a model id or path: token lengths in its tokenizer's tokens")

    def columns(self) -> ColumnMapping:
        return ColumnMapping(text_column=self.text_column, text_pair_column=self.text_pair_column,
                             label_column=self.label_column, split_column=self.split_column)


class DatasetFromSource(DatasetFields):
    """JSON body of POST /datasets: data named by a path under the allowed roots, or a cached hub dataset."""

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
    return {"type": "object", "required": text.get("required", []),
            "properties": text["properties"] | {
                "file": binary | {"description": f"one file for every split ({ACCEPTED})"},
                "train": binary | {"description": "the train split (instead of 'file')"},
                "validation": binary, "test": binary}}


UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _upload_schema()},
    "application/json": {"schema": DatasetFromSource.model_json_schema()},
}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {401: "no or unknown API key", 403: "the key's role may not do this",
            404: "no such dataset; the hint lists what exists", 409: "the name is taken, or variants use the dataset",
            413: "the upload is over SLIMBERT_MAX_DATASET_MB", 415: "neither multipart/form-data nor JSON",
            422: "the data or the request is invalid: the detail names the file, row and column"}
    return {code: {"model": ErrorBody, "description": what[code]} for code in codes}
