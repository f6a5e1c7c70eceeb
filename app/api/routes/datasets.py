"""Stored datasets: upload or name one, list, show, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.api.dataset_schemas import DATASET_ERRORS, UPLOAD_BODY
from app.api.deps import SettingsDep, StoreDep, require
from app.errors import errors
from app.schemas import NamePath
from app.services.datasets import create_from_request, delete_dataset
from slimbert.datasets import DatasetManifest, DatasetStore, open_dataset_store

router = APIRouter(prefix="/datasets", tags=["datasets"])


def get_dataset_store(settings: SettingsDep) -> DatasetStore:
    return open_dataset_store(settings)


DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]


@router.post("", status_code=201, response_model=DatasetManifest, dependencies=[require("admin")],
             responses=errors(409, 413, 415, 422, notes=DATASET_ERRORS), openapi_extra=UPLOAD_BODY,
             summary="Store a dataset: multipart files (file, or train + validation + test), or JSON path/hub_id")
async def create_dataset(request: Request, settings: SettingsDep, datasets: DatasetStoreDep) -> DatasetManifest:
    return await create_from_request(request, settings, datasets)


@router.get("", response_model=list[DatasetManifest], dependencies=[require("predict")])
def list_datasets(datasets: DatasetStoreDep) -> list[DatasetManifest]:
    return datasets.list()


@router.get("/{name}", response_model=DatasetManifest, dependencies=[require("predict")],
            responses=errors(404, 422, notes=DATASET_ERRORS))
def get_dataset(name: NamePath, datasets: DatasetStoreDep) -> DatasetManifest:
    return datasets.get(name)


@router.delete("/{name}", response_model=DatasetManifest, dependencies=[require("admin")],
               responses=errors(404, 409, 422, notes=DATASET_ERRORS), summary="Delete a dataset no variant was made on")
def delete(name: NamePath, datasets: DatasetStoreDep, variants: StoreDep) -> DatasetManifest:
    return delete_dataset(name, datasets, variants)
