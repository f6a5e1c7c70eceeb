"""Datasets named rather than uploaded: a path under the allowed roots, or a hub id already in the local
``datasets`` cache. Nothing here reaches the network."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hub_constants

from slimbert.config import Settings
from slimbert.datasets.read import (
    ACCEPTED,
    FORMATS,
    SPLIT_ALIASES,
    RawDataset,
    hf_datasets,
    is_saved_dataset,
    mb_limit_bytes,
    open_inputs,
    tables_from_arrow,
)
from slimbert.errors import DatasetInvalid, DatasetUnavailable

# "owner/name" or "name": anything else (a path, "..", a URL) is refused before datasets sees it,
# because load_dataset would read a local folder given as an id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
_CONFIG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _split_files(folder: Path) -> dict[str, Path]:
    """train.* / validation.* (or dev.*, valid.*) / test.* files of a folder, one per split."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(p.stem.lower())
        if p.is_file() and split and p.suffix.lower() in FORMATS:
            found.setdefault(split, []).append(p)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DatasetInvalid(f"{len(paths)} files for the {split} split: {', '.join(p.name for p in paths)}",
                                 file=str(folder), hint="keep one file per split in the folder")
    if "train" not in found:
        has = ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "nothing"
        raise DatasetInvalid(f"no train file in the folder (it holds {has})", file=str(folder),
                             hint=f"name the files train.*, validation.* (or dev.*) and test.*; accepted: {ACCEPTED}")
    return {split: paths[0] for split, paths in found.items()}


def resolve_path(path: str, settings: Settings) -> RawDataset:
    """A file (one file, optional split column), a folder of split files, or a save_to_disk folder."""
    try:
        where = Path(path).expanduser().resolve()  # symlinks followed: the real place must be under a root
        exists = where.exists()
    except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, an unknown ~user, a name too long
        raise DatasetUnavailable(f"unusable dataset path {path!r}: {exc}", hint="give an absolute path") from exc
    if not _under(where, settings.allowed_data_roots):
        roots = ", ".join(str(r) for r in settings.allowed_data_roots)
        raise DatasetUnavailable(f"dataset path {path} lies outside the allowed roots",
                                 hint=f"put the data under one of: {roots} (setting SLIMBERT_ALLOWED_DATA_ROOTS), "
                                 "or upload the files")
    if not exists:
        raise DatasetUnavailable(f"dataset path {where} does not exist", hint="check the path, or upload the files")
    source = f"path:{where}"
    if where.is_file() or is_saved_dataset(where):
        return open_inputs({"all": where}, source=source, max_mb=settings.max_dataset_mb,
                           names={"all": where.name})
    files = _split_files(where)
    return open_inputs(files, source=source, max_mb=settings.max_dataset_mb,
                       names={s: p.name for s, p in files.items()})


@contextmanager
def _hub_offline() -> Iterator[Any]:
    """``datasets`` with the hub client switched offline, whatever the environment says, then restored."""
    datasets = hf_datasets()
    before = hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield datasets
    finally:
        hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = before


def load_hub(hub_id: str, config: str | None, settings: Settings) -> RawDataset:
    """A hub dataset from the local ``datasets`` cache only; 422 :class:`DatasetUnavailable` when absent."""
    named = f"{hub_id}/{config}" if config else hub_id
    hint = ("upload the files (POST /datasets, multipart) or give a path under the allowed roots; the hub is "
            "never contacted, only datasets already in the local cache load")
    if not _HUB_ID.match(hub_id) or ".." in hub_id or (config is not None and not _CONFIG.match(config)):
        raise DatasetUnavailable(f"invalid hub dataset id {named!r}",
                                 hint="a hub id is 'name' or 'owner/name' (and config a name); " + hint)
    if Path(hub_id).exists():
        raise DatasetUnavailable(f"{hub_id!r} is a local path, not a hub id", hint='give it as {"path": ...}')
    with _hub_offline() as datasets:
        try:
            data = datasets.load_dataset(hub_id, config, download_mode="reuse_cache_if_exists")
        except Exception as exc:  # not cached, unknown config, offline refusals: many error types
            raise DatasetUnavailable(f"hub dataset {named!r} is not in the local cache ({type(exc).__name__}: "
                                     f"{str(exc)[:300]})", hint=hint) from exc
    size = sum(ds.data.nbytes for ds in (data.values() if hasattr(data, "values") else [data]))
    if size > mb_limit_bytes(settings.max_dataset_mb):
        raise DatasetInvalid(f"the dataset is {size / 1e6:.1f} MB, over the {settings.max_dataset_mb} MB limit",
                             file=named, hint=f"raise SLIMBERT_MAX_DATASET_MB (now {settings.max_dataset_mb})")
    return RawDataset(f"hub:{named}", tables_from_arrow(data, named), [])
