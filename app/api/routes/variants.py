from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import StoreDep, require
from app.errors import errors
from app.schemas import FamilyQuery, NamePath
from slimbert.store.manifest import VariantManifest

router = APIRouter(prefix="/variants", tags=["variants"])


@router.get("", response_model=list[VariantManifest], dependencies=[require("predict")], responses=errors(422))
def list_variants(store: StoreDep, family: FamilyQuery = None) -> list[VariantManifest]:
    """Every stored variant's manifest, or one family's (an unknown family has none)."""
    return store.manifests(family)


@router.get("/{family}/{variant}", response_model=VariantManifest, dependencies=[require("predict")],
            responses=errors(404, 422))
def get_variant(store: StoreDep, family: NamePath, variant: NamePath) -> VariantManifest:
    return store.manifest(family, variant)
