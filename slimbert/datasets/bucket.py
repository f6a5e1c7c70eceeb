"""Stored datasets in the store's bucket, with ``datasets_dir`` as this host's cache.

A dataset is built in local staging exactly as in the local store; publishing uploads its files under
``objects/datasets/<name>/<uuid>/`` and then writes the pointer ``datasets/<name>.json`` with an
exclusive create, so of two hosts creating the same name at once one wins and the other gets a 409. A job
on any host reads the splits from its cache, fetched and sha256-checked on first use.
"""

from __future__ import annotations

import json
from pathlib import Path

from slimbert.config import Settings
from slimbert.data import TextDataset
from slimbert.datasets.manifest import DATASET_MANIFEST, DatasetManifest
from slimbert.datasets.store import STAGING, TRASH, DatasetStore, name_taken
from slimbert.errors import DatasetNotFound
from slimbert.store.bucket import open_bucket
from slimbert.store.manifest import is_valid_name
from slimbert.store.mirror import Pointer, evict, materialise, new_location, read_pointer, upload_tree, write_pointer
from slimbert.store.s3 import S3Blobs
from slimbert.store.store import install_dir, sha256_file


def open_dataset_store(settings: Settings) -> DatasetStore:
    """The one way to the stored datasets: ``datasets_dir``, or the bucket when a store URL is set."""
    bucket = open_bucket(settings)
    if bucket is None:
        return DatasetStore(settings.dataset_dir)
    return BucketDatasetStore(settings.dataset_dir, bucket)


class BucketDatasetStore(DatasetStore):
    def __init__(self, root: Path, bucket: S3Blobs) -> None:
        super().__init__(root)
        self.pointers = bucket.child("datasets")
        self.objects = bucket.child("objects/datasets")

    def _exists(self, name: str) -> bool:
        return self.pointers.exists(f"{name}.json")

    def _publish(self, staging: Path, name: str) -> None:
        files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*"))
                 if p.is_file() and p.name != DATASET_MANIFEST}
        location = new_location(name)
        upload_tree(self.objects, staging, location, files)
        pointer = Pointer(location=location, files=files,
                          manifest=json.loads((staging / DATASET_MANIFEST).read_text(encoding="utf-8")))
        if not write_pointer(self.pointers, f"{name}.json", pointer, exclusive=True):
            self.objects.delete_prefix(location)  # nobody can see them: no pointer names them
            raise name_taken(name)
        install_dir(staging, self.root / name, self.root / TRASH)  # this host's cache starts warm

    def _remove(self, name: str) -> None:
        pointer = read_pointer(self.pointers, f"{name}.json")
        self.pointers.delete(f"{name}.json")
        # The pointer went first: from here on no reader starts fetching these objects.
        if pointer is not None:
            self.objects.delete_prefix(pointer.location)
        evict(self.root / name, self.root / TRASH)

    def names(self) -> list[str]:
        names = (b.key.removesuffix(".json") for b in self.pointers.list() if b.key.endswith(".json"))
        return sorted(n for n in names if is_valid_name(n))

    def _pointer(self, name: str) -> Pointer:
        pointer = read_pointer(self.pointers, f"{name}.json") if is_valid_name(name) else None
        if pointer is None:
            raise DatasetNotFound(f"dataset {name!r} not found",
                                  hint=f"stored datasets: {', '.join(self.names()) or 'none yet (POST /datasets)'}")
        return pointer

    def get(self, name: str) -> DatasetManifest:
        return DatasetManifest.model_validate(self._pointer(name).manifest)

    def load(self, name: str) -> dict[str, TextDataset]:
        materialise(self.objects, self._pointer(name), self.root / name, self.root / STAGING, self.root / TRASH,
                    DATASET_MANIFEST)
        return super().load(name)
