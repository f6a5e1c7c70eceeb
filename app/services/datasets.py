"""POST /datasets and friends: read the upload (or the named source), then store it through slimbert.

An upload is streamed to a temporary folder and cut off as soon as it passes ``max_dataset_mb``, so a
client cannot fill the disk or the memory with one request.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.dataset_schemas import FILE_FIELDS, DatasetFields, DatasetFromSource
from slimbert.config import Settings
from slimbert.datasets import DatasetManifest, DatasetStore, RawDataset, load_hub, open_inputs, resolve_path
from slimbert.datasets.read import mb_limit_bytes
from slimbert.errors import InvalidInput, SlimBertError
from slimbert.models import resolve_model
from slimbert.store.store import VariantStore

# Room for the form fields and multipart boundaries on top of the files themselves.
_FORM_OVERHEAD = 64 * 1024
_MAX_JSON_BYTES = 64 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadTooLarge(SlimBertError):
    status_code = 413


class UnsupportedMediaType(SlimBertError):
    status_code = 415


def _too_large(settings: Settings) -> UploadTooLarge:
    return UploadTooLarge(f"the upload is over the {settings.max_dataset_mb} MB limit",
                          hint=f"upload fewer rows, or raise SLIMBERT_MAX_DATASET_MB (now {settings.max_dataset_mb})")


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


async def _limited(request: Request, limit: int, settings: Settings) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(settings)
        yield chunk


async def create_from_request(request: Request, settings: Settings, datasets: DatasetStore) -> DatasetManifest:
    """Store the dataset a POST /datasets describes: multipart files, or JSON naming a path or a hub id."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _from_upload(request, settings, datasets)
    if kind == "application/json":
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_JSON_BYTES:
                raise InvalidInput("the JSON body is too large", hint="name the data by path or hub id; upload "
                                   "files as multipart/form-data")
        try:
            data = DatasetFromSource.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        return await run_in_threadpool(_from_source, data, settings, datasets)
    raise UnsupportedMediaType(f"content type {kind or '(none)'!r} is not accepted",
                               hint="upload files as multipart/form-data, or send JSON with 'path' or 'hub_id'")


def _from_source(body: DatasetFromSource, settings: Settings, datasets: DatasetStore) -> DatasetManifest:
    datasets.check_new(body.name)
    raw = resolve_path(body.path, settings) if body.path else load_hub(str(body.hub_id), body.config, settings)
    return _store(body, raw, settings, datasets)


def _store(fields: DatasetFields, raw: RawDataset, settings: Settings, datasets: DatasetStore) -> DatasetManifest:
    tokenizer = resolve_model(fields.model, settings) if fields.model else None
    return datasets.create(fields.name, raw, fields.columns(), tokenizer_path=tokenizer, tokenizer_label=fields.model)


async def _from_upload(request: Request, settings: Settings, datasets: DatasetStore) -> DatasetManifest:
    limit = mb_limit_bytes(settings.max_dataset_mb)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
        raise _too_large(settings)  # refused before a byte is read
    parser = MultiPartParser(request.headers, _limited(request, limit + _FORM_OVERHEAD, settings),
                             max_files=len(FILE_FIELDS), max_fields=20)
    try:
        form = await parser.parse()
    except (MultiPartException, KeyError, ValueError) as exc:
        raise InvalidInput(f"unreadable multipart body: {exc}",
                           hint="send multipart/form-data with the fields name, text_column, label_column and "
                           "a file in 'file' or 'train'") from exc
    folder = Path(tempfile.mkdtemp(prefix="slimbert-upload-"))
    try:
        fields: dict[str, str] = {}
        files: dict[str, UploadFile] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in FILE_FIELDS:
                    raise InvalidInput(f"unexpected file field {key!r}", hint=f"files go in {', '.join(FILE_FIELDS)}")
                files[key] = value
            elif value != "" and key not in FILE_FIELDS:
                fields[key] = value
        body: DatasetFields = _validated(DatasetFields, fields)
        datasets.check_new(body.name)  # a taken name is refused before the files are read
        paths, names = await _save_files(files, folder, limit, settings)
        raw = await run_in_threadpool(open_inputs, paths, source="upload", max_mb=settings.max_dataset_mb,
                                      names=names)
        return await run_in_threadpool(_store, body, raw, settings, datasets)
    finally:
        await form.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _save_files(files: dict[str, UploadFile], folder: Path, limit: int, settings: Settings
                      ) -> tuple[dict[str, Path], dict[str, str]]:
    if "file" in files and len(files) > 1:
        raise InvalidInput("both 'file' and per-split files were uploaded",
                           hint="send one file as 'file', or the splits as 'train' (+ 'validation', 'test')")
    if not files or ("file" not in files and "train" not in files):
        raise InvalidInput("no data file in the upload", hint="send the data as 'file', or as 'train' "
                           "(+ 'validation', 'test')")
    paths: dict[str, Path] = {}
    names: dict[str, str] = {}
    total = 0
    for key, upload in files.items():
        role = "all" if key == "file" else key
        shown = Path(upload.filename or "").name or key
        dest = folder / f"{role}--{_SAFE_NAME.sub('_', shown)}"
        with dest.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise _too_large(settings)
                out.write(chunk)
        paths[role], names[role] = dest, shown
    return paths, names


def delete_dataset(name: str, datasets: DatasetStore, variants: VariantStore) -> DatasetManifest:
    """Delete a stored dataset unless a variant in the store was made on it."""
    datasets.get(name)
    used_by = [f"{m.family}/{m.variant}" for m in variants.manifests() if m.dataset == name]
    return datasets.delete(name, used_by)
