from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import StoreDep, require
from slimbert.store.manifest import NAME_PATTERN, VariantManifest

router = APIRouter(prefix="/variants", tags=["variants"])
Name = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.get("", response_model=list[VariantManifest], dependencies=[require("predict")])
def list_variants(store: StoreDep, family: str | None = None) -> list[VariantManifest]:
    return store.manifests(family)


@router.get("/{family}/{variant}", response_model=VariantManifest, dependencies=[require("predict")])
def get_variant(store: StoreDep, family: Name, variant: Name) -> VariantManifest:
    return store.manifest(family, variant)
