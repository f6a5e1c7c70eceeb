"""Variants and benchmark runs in an S3-compatible bucket, with the local store as this host's cache.

Layout under ``s3://<bucket>/<prefix>/``:

- ``variants/<family>/<variant>.json``: the pointer (manifest, location, sha256 per file), written last;
- ``variants/<family>/.reports/<run_id>.json``: benchmark and autotune runs, never rewritten;
- ``objects/variants/<family>/<variant>/<uuid>/...``: the files of one publish, never rewritten.

Staging, and the fetched copies the runtimes load, stay on the local disk (``store_dir``) in the local
layout, so everything that reads ``variant_dir`` works unchanged. Listings read the bucket; the serving
catalog's cheap version stamps reuse one listing for ``refresh_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimbert.config import Settings, parse_store_url
from slimbert.errors import StoreError, VariantNotFound
from slimbert.store.blobs import Blob
from slimbert.store.manifest import MANIFEST_NAME, VariantManifest, is_valid_name
from slimbert.store.mirror import Pointer, evict, materialise, new_location, read_pointer, upload_tree, write_pointer
from slimbert.store.s3 import S3Blobs, make_client
from slimbert.store.store import REPORTS, STAGING, TRASH, VariantStore, Version, check_name, install_dir

log = logging.getLogger(__name__)


def open_bucket(settings: Settings) -> S3Blobs | None:
    """The bucket named by ``settings.store_url``, or None for the local store."""
    if settings.store_url is None:
        return None
    bucket, prefix = parse_store_url(settings.store_url)
    return S3Blobs(make_client(settings.s3_endpoint_url), bucket, prefix)


def open_variant_store(settings: Settings) -> VariantStore:
    """The one way to the variant store: the local directory, or the bucket when a store URL is set."""
    bucket = open_bucket(settings)
    if bucket is None:
        return VariantStore(settings.store_dir, min_free_mb=settings.min_free_disk_mb)
    return BucketVariantStore(settings.store_dir, bucket, min_free_mb=settings.min_free_disk_mb,
                              refresh_s=settings.store_refresh_s)


class BucketVariantStore(VariantStore):
    """Publishing to and reading from a bucket; ``root`` holds this host's staging and cache."""

    def __init__(self, root: Path, bucket: S3Blobs, *, min_free_mb: int = 0, refresh_s: float = 2.0) -> None:
        super().__init__(root, min_free_mb=min_free_mb)
        self.bucket = bucket
        self.pointers = bucket.child("variants")
        self.objects = bucket.child("objects/variants")
        self.refresh_s = refresh_s
        self._listing: tuple[float, list[Blob]] | None = None
        self._runs: dict[str, dict[str, Any]] = {}  # runs are never rewritten: each is read once

    # --- writing -----------------------------------------------------------------------------
    def publish(
        self,
        staged: Path,
        manifest: VariantManifest,
        *,
        before_rename: Callable[[], None] | None = None,
    ) -> VariantManifest:
        """Upload the staged files under a new prefix, then the pointer: readers see the variant whole or
        not at all. The staged folder then becomes this host's cached copy."""
        manifest = self.seal(staged, manifest)
        location = new_location(manifest.family, manifest.variant)
        upload_tree(self.objects, staged, location, manifest.files)
        if before_rename is not None:
            before_rename()
        pointer = Pointer(location=location, files=manifest.files, manifest=json.loads(manifest.model_dump_json()))
        write_pointer(self.pointers, _key(manifest.family, manifest.variant), pointer)
        self._listing = None
        install_dir(staged, self._local_dir(manifest.family, manifest.variant), self.root / TRASH)
        log.info("published %s/%s to %s (%d files, %.1f MB)", manifest.family, manifest.variant,
                 self.objects.url(location), len(manifest.files), manifest.size_bytes / 1e6)
        return manifest

    def save_report(self, family: str, run_id: str, report: dict[str, Any]) -> str:
        check_name("family", family)
        check_name("run id", run_id)
        key = f"{family}/{REPORTS}/{run_id}.json"
        if not self.pointers.put(key, json.dumps(report, indent=1).encode(), exclusive=True):
            raise StoreError(f"benchmark run {run_id} already exists", hint="each run needs a new id")
        self._listing = None
        return self.pointers.url(key)

    def writable(self) -> bool:
        return super().writable() and self.bucket.reachable()

    # --- reading -----------------------------------------------------------------------------
    def _pointer(self, family: str, variant: str) -> Pointer | None:
        check_name("family", family)
        check_name("variant", variant)
        return read_pointer(self.pointers, _key(family, variant))

    def manifest(self, family: str, variant: str) -> VariantManifest:
        pointer = self._pointer(family, variant)
        if pointer is None:
            raise self._not_found(family, variant)
        return VariantManifest.model_validate(pointer.manifest)

    def variant_dir(self, family: str, variant: str) -> Path:
        """The variant fetched into this host's cache: reused while it holds the bucket's manifest, else
        downloaded into staging, each file checked against its sha256, and renamed into place."""
        pointer = self._pointer(family, variant)
        if pointer is None:
            raise self._not_found(family, variant)
        target = self._local_dir(family, variant)
        if not (target / MANIFEST_NAME).is_file():
            self.check_free_space()
        return materialise(self.objects, pointer, target, self.root / STAGING, self.root / TRASH, MANIFEST_NAME)

    def verify(self, manifest: VariantManifest) -> None:
        self.variant_dir(manifest.family, manifest.variant)
        try:
            super().verify(manifest)
        except StoreError:
            # The cached copy went bad after it was checked: the bucket holds the truth, fetch it again.
            log.warning("cached copy of %s/%s is damaged; fetching it again", manifest.family, manifest.variant)
            evict(self._local_dir(manifest.family, manifest.variant), self.root / TRASH)
            self.variant_dir(manifest.family, manifest.variant)
            super().verify(manifest)

    def families(self) -> list[str]:
        newest: dict[str, float] = {}
        for (family, _), blob in self._published(fresh=True).items():
            newest[family] = max(newest.get(family, 0.0), blob.modified)
        return [name for _, name in sorted(((t, n) for n, t in newest.items()), reverse=True)]

    def manifests(self, family: str | None = None) -> list[VariantManifest]:
        published = self._published(fresh=True)
        families = [family] if family else self.families()
        out: list[VariantManifest] = []
        for fam in families:
            check_name("family", fam)
            for variant in sorted(v for f, v in published if f == fam):
                pointer = self._pointer(fam, variant)
                if pointer is not None:  # deleted since the listing
                    out.append(VariantManifest.model_validate(pointer.manifest))
        return out

    def reports(self, family: str) -> list[dict[str, Any]]:
        check_name("family", family)
        prefix = f"{family}/{REPORTS}/"
        keys = [blob.key for blob in self.pointers.list(prefix)]
        for key in keys:
            if key not in self._runs and (raw := self.pointers.get(key)) is not None:
                self._runs[key] = json.loads(raw)
        runs = [self._runs[key] for key in keys if key in self._runs]
        return sorted(runs, key=lambda r: str(r.get("created_at", "")))

    # --- versions --------------------------------------------------------------------------------
    def _blobs(self, fresh: bool = False) -> list[Blob]:
        now = time.monotonic()
        cached = self._listing
        if fresh or cached is None or now - cached[0] >= self.refresh_s:
            cached = (now, self.pointers.list())
            self._listing = cached
        return cached[1]

    def _published(self, fresh: bool = False) -> dict[tuple[str, str], Blob]:
        out: dict[tuple[str, str], Blob] = {}
        for blob in self._blobs(fresh):
            family, _, name = blob.key.partition("/")
            variant = name.removesuffix(".json")
            if name.endswith(".json") and is_valid_name(family) and is_valid_name(variant):
                out[(family, variant)] = blob
        return out

    def manifest_version(self, family: str, variant: str) -> Version | None:
        check_name("family", family)
        check_name("variant", variant)
        blob = self._published().get((family, variant))
        if blob is None:  # published since the last listing, perhaps: a miss always asks the bucket
            blob = self._published(fresh=True).get((family, variant))
        return None if blob is None else (blob.etag,)

    def manifest_versions(self, family: str) -> tuple[tuple[str, Version], ...]:
        check_name("family", family)
        return tuple(sorted((v, (b.etag,)) for (f, v), b in self._published().items() if f == family))

    def families_stamp(self) -> Version:
        return tuple(sorted(f"{f}/{v}:{b.etag}" for (f, v), b in self._published().items()))

    def report_names(self, family: str) -> frozenset[str]:
        check_name("family", family)
        prefix = f"{family}/{REPORTS}/"
        return frozenset(b.key.removeprefix(prefix) for b in self._blobs()
                         if b.key.startswith(prefix) and b.key.endswith(".json"))

    def _not_found(self, family: str, variant: str) -> VariantNotFound:
        published = self._published(fresh=True)
        existing = sorted(v for f, v in published if f == family)
        if existing:
            hint = f"variants of {family}: {', '.join(existing)}"
        else:
            hint = f"families: {', '.join(sorted({f for f, _ in published})) or 'none yet'}"
        return VariantNotFound(f"variant {family}/{variant} not found", hint=hint)


def _key(family: str, variant: str) -> str:
    return f"{family}/{variant}.json"
