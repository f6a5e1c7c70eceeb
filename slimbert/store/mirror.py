"""Folders published to a bucket and fetched back into a host's local cache, trusting only what hashes right.

A published folder is two things in the bucket: its files under a prefix of their own
(``<objects>/<location>/<path>``), never written again, and a *pointer* (the manifest, the location and
each file's sha256), written last. A reader who finds a pointer finds every file it names: a half-uploaded
folder has no pointer, so no listing shows it. A republish uploads under a new location, then replaces the
pointer: a reader sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from slimbert.errors import StoreError
from slimbert.records import SHARED_FILE_MODE
from slimbert.store.blobs import Blobs
from slimbert.store.s3 import S3Blobs
from slimbert.store.store import fsync_tree, install_dir, sha256_file

log = logging.getLogger(__name__)

POINTER_FORMAT = 1


class Pointer(BaseModel):
    """What a reader of the bucket trusts: the manifest, where its files lie, and each file's sha256."""

    format_version: int = POINTER_FORMAT
    location: str
    files: dict[str, str]
    manifest: dict[str, Any]


def new_location(*parts: str) -> str:
    """A prefix no earlier publish used: a republish never overwrites objects a reader may be fetching."""
    return "/".join([*parts, uuid.uuid4().hex])


def read_pointer(blobs: Blobs, key: str) -> Pointer | None:
    raw = blobs.get(key)
    if raw is None:
        return None
    try:
        return Pointer.model_validate_json(raw)
    except ValidationError as exc:
        raise StoreError(f"the pointer {key} in the bucket is not valid: {exc.errors()[:1]}",
                         hint="it was written by another program or damaged; publish the folder again") from exc


def upload_tree(objects: S3Blobs, staged: Path, location: str, files: Mapping[str, str]) -> None:
    """Upload the files named in ``files`` (relative paths) from ``staged`` under ``location``."""
    for rel in files:
        objects.upload(f"{location}/{rel}", staged / rel)


def write_pointer(pointers: Blobs, key: str, pointer: Pointer, *, exclusive: bool = False) -> bool:
    """The last write of a publish: from here on, readers see the folder."""
    return pointers.put(key, pointer.model_dump_json().encode(), exclusive=exclusive)


def is_cached(target: Path, pointer: Pointer, manifest_name: str) -> bool:
    """The local copy holds this pointer's manifest (its files were checked when they came)."""
    try:
        return bool(json.loads((target / manifest_name).read_text()) == pointer.manifest)
    except (OSError, ValueError):
        return False


def _safe_rel(rel: str) -> PurePosixPath:
    # A pointer comes from the bucket: a path in it must not climb out of the cache folder.
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise StoreError(f"the bucket's manifest names an unsafe path {rel!r}", hint="publish the folder again")
    return path


def materialise(objects: S3Blobs, pointer: Pointer, target: Path, staging: Path, trash: Path,
                manifest_name: str) -> Path:
    """``target`` holding the pointer's files and manifest: the cache as it is when it matches, else
    fetched into ``staging``, every file's sha256 checked, and renamed into place."""
    if is_cached(target, pointer, manifest_name):
        return target
    tmp = staging / f"fetch--{target.name}--{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    try:
        for rel, expected in pointer.files.items():
            dest = tmp / _safe_rel(rel)
            objects.download(f"{pointer.location}/{rel}", dest)
            if sha256_file(dest) != expected:
                raise StoreError(f"{objects.url(f'{pointer.location}/{rel}')} does not match its sha256 in the "
                                 "manifest", hint="the object was damaged or replaced in the bucket; publish again")
            os.chmod(dest, SHARED_FILE_MODE)
        (tmp / manifest_name).write_text(json.dumps(pointer.manifest, indent=2))
        fsync_tree(tmp)
        try:
            install_dir(tmp, target, trash)
        except OSError:
            # Another process of this host fetched the same folder at the same moment: theirs is as good.
            if not is_cached(target, pointer, manifest_name):
                raise
        log.info("fetched %s (%d files) into %s", objects.url(pointer.location), len(pointer.files), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def evict(target: Path, trash: Path) -> None:
    """Drop a cached folder (a damaged copy, a deleted dataset) without a moment where it is half gone."""
    if target.exists():
        aside = trash / f"{target.name}--{uuid.uuid4().hex[:12]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)
