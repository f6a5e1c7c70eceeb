"""Stored datasets: immutable folders ``<root>/<name>/``, built in staging and published by one rename.

Layout of a dataset: ``train.jsonl`` (and ``validation.jsonl``, ``test.jsonl`` where given), one
``{"text", "text_pair"?, "label"}`` object per line with the label by name; the user's original files
under ``files/``; ``dataset.json`` (the manifest) written last. Nothing half-written is ever visible:
a failure removes the staging folder, and a listing skips dot-folders (``.staging``, ``.trash``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from slimbert.data import TextDataset
from slimbert.datasets.build import BuiltSplits, Example, build_splits, split_stats, to_text_dataset
from slimbert.datasets.manifest import DATASET_MANIFEST, SPLITS, ColumnMapping, DatasetFile, DatasetManifest
from slimbert.datasets.read import RawDataset, tree_bytes
from slimbert.errors import Conflict, DatasetNotFound, InvalidInput, StoreError
from slimbert.models import load_tokenizer
from slimbert.records import SHARED_FILE_MODE
from slimbert.store.manifest import is_valid_name
from slimbert.store.store import fsync_tree, sha256_file

log = logging.getLogger(__name__)

STAGING = ".staging"
TRASH = ".trash"
FILES = "files"
SHARED_DIR_MODE = 0o775  # the API and both workers share the volume under one gid


def _share(path: Path) -> None:
    """Group read/write on ``path`` and everything below it, whatever the process umask."""
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(SHARED_DIR_MODE if p.is_dir() else SHARED_FILE_MODE)


def _mkdir_shared(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(SHARED_DIR_MODE)
        except PermissionError:  # made by another service's uid at the same moment
            pass


def name_taken(name: str) -> Conflict:
    return Conflict(f"dataset {name!r} already exists; stored datasets are immutable",
                    hint=f"pick another name, or DELETE /datasets/{name} first")


def _write_split(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for e in examples:
            row = {"text": e.text} | ({"text_pair": e.pair} if e.pair is not None else {}) | {"label": e.label}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


class DatasetStore:
    """Create, list, read and delete stored datasets under ``root`` (``settings.dataset_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _mkdir_shared(self.root)

    # --- writing -----------------------------------------------------------------------------
    def create(
        self,
        name: str,
        raw: RawDataset,
        columns: ColumnMapping,
        *,
        tokenizer_path: str | None = None,
        tokenizer_label: str | None = None,
        before_rename: Callable[[], None] | None = None,
    ) -> DatasetManifest:
        """Check ``raw`` against ``columns`` and store it as ``name``, atomically; returns the manifest.

        ``tokenizer_path`` (a local model directory) measures lengths in that tokenizer's tokens, else
        in whitespace words. ``before_rename`` is a test seam run after everything is written.
        """
        self.check_new(name)
        staging = self.root / STAGING / f"{name}--{uuid.uuid4().hex[:12]}"
        _mkdir_shared(staging.parent)
        staging.mkdir()
        try:
            built = build_splits(raw.tables, columns)
            tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
            manifest = DatasetManifest(
                name=name, source=raw.source, files=self._keep_originals(raw, staging),
                sha256=self._write_splits(built, staging), columns=columns,
                task="pair" if columns.text_pair_column else "single", label_names=built.label_names,
                splits=split_stats(built, tokenizer), splits_given=built.given,
                lengths_in=f"tokens of {tokenizer_label or tokenizer_path}" if tokenizer else "whitespace tokens",
                size_bytes=tree_bytes(staging))
            (staging / DATASET_MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
            _share(staging)
            fsync_tree(staging)
            if before_rename is not None:
                before_rename()
            self._publish(staging, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("stored dataset %s (%s, %d labels, %s)", name, manifest.task, len(manifest.label_names),
                 ", ".join(f"{s} {v.rows}" for s, v in manifest.splits.items()))
        return manifest

    def check_new(self, name: str) -> None:
        """Refuse an invalid name (422) or a name already stored (409)."""
        if not is_valid_name(name):
            raise InvalidInput(f"invalid dataset name {name!r}",
                               hint="dataset names use lower-case letters, digits, '.', '_' and '-' (at most 64 "
                               "characters, starting with a letter or digit)")
        if self._exists(name):
            raise name_taken(name)

    def _exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def _publish(self, staging: Path, name: str) -> None:
        target = self.root / name
        try:
            os.rename(staging, target)  # fails on an existing, non-empty folder: a racing create of the same name
        except OSError as exc:
            if target.exists():
                raise name_taken(name) from exc
            raise StoreError(f"could not publish dataset {name!r}: {exc}", hint="check the store's disk") from exc
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _write_splits(built: BuiltSplits, staging: Path) -> str:
        digest = hashlib.sha256()
        for split in SPLITS:
            if split in built.splits:
                path = staging / f"{split}.jsonl"
                _write_split(path, built.splits[split])
                digest.update(f"{split}\n".encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()

    @staticmethod
    def _keep_originals(raw: RawDataset, staging: Path) -> list[DatasetFile]:
        files: list[DatasetFile] = []
        for src, shown, split in raw.files:
            # A split's own name first: two uploads may both be called data.csv.
            dest = staging / FILES / (Path(shown).name if split == "all" else f"{split}--{Path(shown).name}")
            dest.parent.mkdir(exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest)
                files += [DatasetFile(name=f"{shown}/{p.relative_to(src).as_posix()}", split=split,
                                      sha256=sha256_file(p), bytes=p.stat().st_size)
                          for p in sorted(src.rglob("*")) if p.is_file()]
            else:
                shutil.copyfile(src, dest)
                files.append(DatasetFile(name=shown, split=split, sha256=sha256_file(dest),
                                         bytes=dest.stat().st_size))
        return files

    def delete(self, name: str, used_by: list[str]) -> DatasetManifest:
        """Remove ``name``; refused while variants (``used_by``, "family/variant") were made on it."""
        manifest = self.get(name)
        if used_by:
            raise Conflict(f"dataset {name!r} is used by {len(used_by)} variant(s): {', '.join(sorted(used_by))}",
                           hint="delete those variants first; their manifests name the data they were made on")
        self._remove(name)
        log.info("deleted dataset %s", name)
        return manifest

    def _remove(self, name: str) -> None:
        aside = self.root / TRASH / f"{name}--{uuid.uuid4().hex[:12]}"
        _mkdir_shared(aside.parent)
        os.rename(self.root / name, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def clean_staging(self, older_than_s: float) -> int:
        """Remove debris of crashed creates untouched for ``older_than_s``; returns how many went."""
        count = 0
        cutoff = time.time() - older_than_s
        for sub in (STAGING, TRASH):
            base = self.root / sub
            for child in base.iterdir() if base.is_dir() else []:
                if child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)
                    count += 1
        return count

    # --- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / DATASET_MANIFEST).is_file())

    def list(self) -> list[DatasetManifest]:
        """Every stored dataset's manifest, by name."""
        return [self.get(n) for n in self.names()]

    def get(self, name: str) -> DatasetManifest:
        path = self.root / name / DATASET_MANIFEST
        if not is_valid_name(name) or not path.is_file():
            raise DatasetNotFound(f"dataset {name!r} not found",
                                  hint=f"stored datasets: {', '.join(self.names()) or 'none yet (POST /datasets)'}")
        return DatasetManifest.model_validate_json(path.read_text(encoding="utf-8"))

    def load(self, name: str) -> dict[str, TextDataset]:
        """The stored splits as datasets (source ``dataset:<name>``), every one with all the label names."""
        manifest = self.get(name)
        out: dict[str, TextDataset] = {}
        for split in SPLITS:
            path = self.root / name / f"{split}.jsonl"
            if not path.is_file():
                continue
            with path.open(encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            examples = [Example(r["text"], r.get("text_pair") if manifest.task == "pair" else None, r["label"],
                                path.name, i) for i, r in enumerate(rows, start=1)]
            out[split] = to_text_dataset(examples, manifest.label_names, f"dataset:{name}")
        return out
