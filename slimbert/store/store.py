"""The only code that touches ``models_store/``.

Layout: ``<root>/<family>/<variant>/`` holds the runtime's files, the tokenizer and ``manifest.json``.
Work in progress lives in ``<root>/.staging/`` and is published by one ``rename``; a crashed job
leaves only staging debris, which :meth:`VariantStore.clean_staging` removes and no listing shows.
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
from typing import Any

from slimbert.errors import SlimBertError, StoreError, VariantNotFound
from slimbert.records import SHARED_FILE_MODE
from slimbert.store.manifest import MANIFEST_NAME, VariantManifest, is_valid_name

log = logging.getLogger(__name__)

STAGING = ".staging"
TRASH = ".trash"
REPORTS = ".reports"  # inside a family: benchmark runs, one JSON file each


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(path: Path) -> None:
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
        rename, so a test can fail there and see that nothing became visible.
        """
        files = {
            p.relative_to(staged).as_posix(): sha256_file(p)
            for p in sorted(staged.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        }
        size = sum((staged / rel).stat().st_size for rel in files)
        manifest = manifest.model_copy(update={"files": files, "size_bytes": size})
        (staged / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
        _fsync_tree(staged)
        if before_rename is not None:
            before_rename()
        target = self.variant_dir(manifest.family, manifest.variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            # A rerun replaces the old variant: move it aside first, since rename() cannot
            # replace a non-empty directory. Readers see the old or the new one, never a mix.
            aside = self.root / TRASH / f"{manifest.family}--{manifest.variant}--{uuid.uuid4().hex[:12]}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, aside)
            os.rename(staged, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(staged, target)
        log.info("published %s/%s (%d files, %.1f MB)", manifest.family, manifest.variant, len(files), size / 1e6)
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
    def save_report(self, family: str, run_id: str, report: dict[str, Any]) -> Path:
        """Write one benchmark run atomically; a run id is never reused, so nothing is overwritten."""
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
        return target

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
    def variant_dir(self, family: str, variant: str) -> Path:
        check_name("family", family)
        check_name("variant", variant)
        return self.root / family / variant

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
        path = self.variant_dir(family, variant) / MANIFEST_NAME
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
        base = self.variant_dir(manifest.family, manifest.variant)
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
