"""What the store holds, as the serving path needs it, cached and checked against the store per request.

A request used to read manifests from disk and, with no variant named, rebuild the showdown from the
family's benchmark runs. Here each answer is cached under a stamp the store gives cheaply: a manifest
under its version (on disk the file's (inode, mtime, size), a few microseconds of ``stat``; in a bucket
the object's ETag from a listing reused for ``store_refresh_s``), a family under the versions of its
manifests, the CPU recommendation under those plus the names of the family's stored runs (runs are never
rewritten: a new run is a new name). A publish writes a new manifest, so a republished variant's version
changes and the next request sees the new manifest (and the engine reloads the weights). Nothing needs
telling: a worker process that publishes or saves a run invalidates the API's caches by changing the store.
"""

from __future__ import annotations

import logging
import threading

from app.services.reports import cpu_recommendation
from slimbert.errors import VariantNotFound
from slimbert.records import BASELINE, PRUNED
from slimbert.store.manifest import VariantManifest
from slimbert.store.store import VariantStore, Version

log = logging.getLogger(__name__)

__all__ = ["Catalog", "Version", "needs_gpu"]

FamilyStamp = tuple[tuple[str, Version], ...]

# Without a named variant and without a benchmark run, serve the first of these that the family has:
# the smallest, fastest CPU form first. With a run, the showdown's CPU recommendation wins.
DEFAULT_ORDER = ("pruned-int8", "baseline-int8", PRUNED, BASELINE)


def needs_gpu(manifest: VariantManifest) -> bool:
    return manifest.target_device == "gpu" or manifest.precision == "fp16"


class Catalog:
    def __init__(self, store: VariantStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], tuple[Version, VariantManifest]] = {}
        self._families: tuple[Version, list[str]] | None = None
        self._defaults: dict[str, tuple[tuple[FamilyStamp, frozenset[str]], str]] = {}
        self.reads = 0  # manifest files read and recommendations computed, for tests

    # --- one variant -----------------------------------------------------------------------------
    def version(self, family: str, variant: str) -> Version:
        """The version of a published variant (404 naming what exists when it is not there)."""
        found = self.store.manifest_version(family, variant)
        if found is None:
            self.store.manifest(family, variant)  # raises VariantNotFound with the hint
            raise VariantNotFound(f"variant {family}/{variant} not found")  # vanished in between
        return found

    def manifest(self, family: str, variant: str) -> VariantManifest:
        version = self.version(family, variant)
        cached = self._manifests.get((family, variant))
        if cached is not None and cached[0] == version:
            return cached[1]
        manifest = self.store.manifest(family, variant)
        with self._lock:
            self.reads += 1
            self._manifests[(family, variant)] = (version, manifest)
        return manifest

    # --- families --------------------------------------------------------------------------------
    def _family_stamp(self, family: str) -> FamilyStamp:
        return self.store.manifest_versions(family)

    def manifests(self, family: str) -> dict[str, VariantManifest]:
        """The family's variants by name, each from the cache while its manifest is unchanged."""
        return {name: self.manifest(family, name) for name, _ in self._family_stamp(family)}

    def newest_family(self) -> str:
        """The family published to last (as ``VariantStore.newest_family``), cached under the store's
        stamp of all families, which every publish changes."""
        stamp = self.store.families_stamp()
        cached = self._families
        if cached is None or cached[0] != stamp:
            cached = (stamp, self.store.families())
            self._families = cached
        if not cached[1]:
            raise VariantNotFound("the store holds no variants yet", hint="run POST /jobs/compress first")
        return cached[1][0]

    def _runs_stamp(self, family: str) -> frozenset[str]:
        return self.store.report_names(family)

    # --- the default variant ---------------------------------------------------------------------
    def default_variant(self, family: str) -> VariantManifest:
        """The variant served when none is named: the showdown's CPU recommendation from the latest
        benchmark run, else the first of DEFAULT_ORDER, else the first CPU-servable name."""
        stamp = (self._family_stamp(family), self._runs_stamp(family))
        if not stamp[0]:
            raise VariantNotFound(f"family {family} has no variants", hint="run POST /jobs/compress")
        cached = self._defaults.get(family)
        if cached is not None and cached[0] == stamp:
            return self.manifest(family, cached[1])
        manifests = self.manifests(family)
        name = self._pick(family, manifests)
        with self._lock:
            self.reads += 1
            self._defaults[family] = (stamp, name)
        return manifests[name]

    def _pick(self, family: str, manifests: dict[str, VariantManifest]) -> str:
        recommended = cpu_recommendation(self.store, family, list(manifests.values())) if manifests else None
        if recommended in manifests:
            return str(recommended)
        for name in DEFAULT_ORDER:
            if name in manifests:
                return name
        # Last resort: alphabetical, variants the CPU can serve first.
        return min(manifests.values(), key=lambda m: (needs_gpu(m), m.variant)).variant

    def choose(self, family: str | None, variant: str | None) -> VariantManifest:
        """The manifest a prediction runs: the named variant, or the family's default."""
        fam = family or self.newest_family()
        if variant:
            return self.manifest(fam, variant)  # 404 with the list of what exists
        return self.default_variant(fam)

    def cpu_servable(self, family: str) -> list[str]:
        return [name for name, m in self.manifests(family).items() if not needs_gpu(m)]
