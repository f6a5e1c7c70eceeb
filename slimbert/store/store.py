"""The only code that touches ``models_store/``.

Layout: ``<root>/<family>/<variant>/`` holds the runtime's files, the tokenizer and ``manifest.json``.
Work in progress lives in ``<root>/.staging/`` and is published by one ``rename``; a crashed job
leaves only staging debris, which :meth:`VariantStore.clean_staging` removes and no listing shows.
With a bucket (``slimbert.store.bucket``) the same layout is this host's cache of the bucket.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from slimbert.errors import SlimBertError, StoreError, VariantNotFound
from slimbert.records import SHARED_FILE_MODE
from slimbert.store.manifest import MANIFEST_NAME, VariantManifest, is_valid_name

log = logging.getLogger(__name__)

STAGING = ".staging"
TRASH = ".trash"
REPORTS = ".reports"  # inside a family: benchmark runs, one JSON file each

# What changes whenever a variant is (re)published: a manifest file's (inode, mtime in ns, size) here,
# the manifest object's ETag in a bucket. The serving catalog caches manifests under it.
Version: TypeAlias = tuple[int | str, ...]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_tree(path: Path) -> None:
    """Flush every file and directory below ``path`` so a rename never publishes unwritten data."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def install_dir(staged: Path, target: Path, trash: Path) -> None:
    """Rename ``staged`` to ``target``, replacing a folder already there: readers see the old or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # rename() cannot replace a non-empty directory: move the old one aside first.
        aside = trash / f"{target.parent.name}--{target.name}--{uuid.uuid4().hex[:12]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, aside)
        os.rename(staged, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(staged, target)


def _file_version(path: Path) -> Version | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def check_name(kind: str, name: str) -> None:
    if not is_valid_name(name):
        raise SlimBertError(
            f"invalid {kind} name {name!r}",
            hint=f"{kind} names use lower-case letters, digits, '.', '_' and '-' (at most 64 characters)",
        )


class VariantStore:
    """Atomic publishing and lookup of model variants."""

    def __init__(self, root: Path, *, min_free_mb: int = 0) -> None:
        self.root = Path(root)
        self.min_free_mb = min_free_mb
        self.root.mkdir(parents=True, exist_ok=True)

    # --- writing -----------------------------------------------------------------------------
    @contextmanager
    def staging(self, family: str, variant: str) -> Iterator[Path]:
        """A private scratch directory for one variant; removed on any error."""
        check_name("family", family)
        check_name("variant", variant)
        self.check_free_space()
        path = self.root / STAGING / f"{family}--{variant}--{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(
        self,
        staged: Path,
        manifest: VariantManifest,
        *,
        before_rename: Callable[[], None] | None = None,
    ) -> VariantManifest:
        """Hash the staged files, write the manifest last, fsync, and rename into place.

        ``before_rename`` is a test seam: it runs after everything is written and before the
        rename (with a bucket: before the manifest is uploaded), so a test can fail there and see
        that nothing became visible.
        """
        manifest = self.seal(staged, manifest)
        if before_rename is not None:
            before_rename()
        install_dir(staged, self._local_dir(manifest.family, manifest.variant), self.root / TRASH)
        log.info("published %s/%s (%d files, %.1f MB)", manifest.family, manifest.variant, len(manifest.files),
                 manifest.size_bytes / 1e6)
        return manifest

    @staticmethod
    def seal(staged: Path, manifest: VariantManifest) -> VariantManifest:
        """Hash the staged files into the manifest, write it last, and fsync the folder."""
        files = {
            p.relative_to(staged).as_posix(): sha256_file(p)
            for p in sorted(staged.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        }
        size = sum((staged / rel).stat().st_size for rel in files)
        manifest = manifest.model_copy(update={"files": files, "size_bytes": size})
        (staged / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
        fsync_tree(staged)
        return manifest

    def check_free_space(self) -> None:
        free_mb = shutil.disk_usage(self.root).free / 1e6
        if free_mb < self.min_free_mb:
            raise StoreError(
                f"only {free_mb:.0f} MB free in {self.root}, below the {self.min_free_mb} MB minimum",
                hint="free disk space or lower SLIMBERT_MIN_FREE_DISK_MB",
            )

    def clean_staging(self, older_than_s: float) -> int:
        """Remove debris of crashed jobs; returns how many directories went.

        Only entries untouched for ``older_than_s`` go: other workers share the store, and their
        running jobs stage here too. Pass at least the tasks' hard time limit.
        """
        count = 0
        cutoff = time.time() - older_than_s
        for sub in (STAGING, TRASH):
            base = self.root / sub
            if base.is_dir():
                for child in base.iterdir():
                    if child.stat().st_mtime < cutoff:
                        shutil.rmtree(child, ignore_errors=True)
                        count += 1
        return count

    # --- benchmark reports ---------------------------------------------------------------------
    def save_report(self, family: str, run_id: str, report: dict[str, Any]) -> str:
        """Write one benchmark run atomically; a run id is never reused, so nothing is overwritten.
        Returns where it went (a path here, an s3:// URL with a bucket)."""
        check_name("family", family)
        check_name("run id", run_id)
        folder = self.root / family / REPORTS
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{run_id}.json"
        if target.exists():
            raise StoreError(f"benchmark run {run_id} already exists", hint="each run needs a new id")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        os.fchmod(fd, SHARED_FILE_MODE)  # mkstemp makes 0600; every service reads the runs
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, target)
        return str(target)

    def reports(self, family: str) -> list[dict[str, Any]]:
        """Every benchmark run of a family, oldest first."""
        check_name("family", family)
        folder = self.root / family / REPORTS
        runs = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(runs, key=lambda r: str(r.get("created_at", "")))

    def latest_report(self, family: str, kind: str = "benchmark") -> dict[str, Any] | None:
        """The newest run of ``kind`` ('benchmark' or 'autotune')."""
        runs = [r for r in self.reports(family) if r.get("kind", "benchmark") == kind]
        return runs[-1] if runs else None

    # --- reading -----------------------------------------------------------------------------
    def _local_dir(self, family: str, variant: str) -> Path:
        check_name("family", family)
        check_name("variant", variant)
        return self.root / family / variant

    def variant_dir(self, family: str, variant: str) -> Path:
        """The folder holding the variant's files (with a bucket: fetched into this host's cache first)."""
        return self._local_dir(family, variant)

    def writable(self) -> bool:
        """Whether this process can write the store (readiness)."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
            return os.access(self.root, os.W_OK)
        except OSError:
            return False

    # --- versions: cheap stamps the serving catalog caches under ------------------------------------
    def manifest_version(self, family: str, variant: str) -> Version | None:
        """Changes whenever the variant is republished; None when it is not published."""
        return _file_version(self._local_dir(family, variant) / MANIFEST_NAME)

    def manifest_versions(self, family: str) -> tuple[tuple[str, Version], ...]:
        """(variant, version) of every published variant of ``family``, by name."""
        check_name("family", family)
        base = self.root / family
        try:
            names = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return ()
        found = ((name, _file_version(base / name / MANIFEST_NAME)) for name in names)
        return tuple((name, v) for name, v in found if v is not None)

    def families_stamp(self) -> Version:
        """Changes whenever a variant is published into any family (the mtimes of the family folders)."""
        return tuple(sorted(f"{e.name}:{e.stat().st_mtime_ns}" for e in os.scandir(self.root)
                            if e.is_dir() and not e.name.startswith(".")))

    def report_names(self, family: str) -> frozenset[str]:
        """The stored runs' file names: a run is never rewritten, so a new name is a new run."""
        check_name("family", family)
        try:
            return frozenset(e.name for e in os.scandir(self.root / family / REPORTS)
                             if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return frozenset()

    def families(self) -> list[str]:
        """Families with at least one published variant, newest first."""
        found: list[tuple[float, str]] = []
        for child in self.root.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            mtimes = [m.stat().st_mtime for m in child.glob(f"*/{MANIFEST_NAME}")]
            if mtimes:
                found.append((max(mtimes), child.name))
        return [name for _, name in sorted(found, reverse=True)]

    def manifests(self, family: str | None = None) -> list[VariantManifest]:
        families = [family] if family else self.families()
        out: list[VariantManifest] = []
        for fam in families:
            check_name("family", fam)
            for path in sorted((self.root / fam).glob(f"*/{MANIFEST_NAME}")):
                out.append(VariantManifest.model_validate_json(path.read_text()))
        return out

    def manifest(self, family: str, variant: str) -> VariantManifest:
        path = self._local_dir(family, variant) / MANIFEST_NAME
        if not path.is_file():
            raise self._not_found(family, variant)
        return VariantManifest.model_validate_json(path.read_text())

    def newest_family(self) -> str:
        families = self.families()
        if not families:
            raise VariantNotFound("the store holds no variants yet", hint="run POST /jobs/compress first")
        return families[0]

    def verify(self, manifest: VariantManifest) -> None:
        """Check each file's sha256 against the manifest; corrupted files fail loudly."""
        base = self._local_dir(manifest.family, manifest.variant)
        for rel, expected in manifest.files.items():
            path = base / rel
            if not path.is_file() or sha256_file(path) != expected:
                raise StoreError(
                    f"{manifest.family}/{manifest.variant}: file {rel} is missing or corrupted",
                    hint="delete the variant and rebuild it with the recipe in its manifest",
                )

    def _not_found(self, family: str, variant: str) -> VariantNotFound:
        fam_dir = self.root / family
        existing = sorted(p.parent.name for p in fam_dir.glob(f"*/{MANIFEST_NAME}")) if fam_dir.is_dir() else []
        if existing:
            hint = f"variants of {family}: {', '.join(existing)}"
        else:
            hint = f"families: {', '.join(self.families()) or 'none yet'}"
        return VariantNotFound(f"variant {family}/{variant} not found", hint=hint)
