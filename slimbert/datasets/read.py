"""Read a user's dataset files into tables: CSV, TSV, JSON lines, Parquet and ``save_to_disk`` folders.

Real files are messy, so each reader is strict about what it cannot guess and forgiving about what it
can: a UTF-8 byte-order mark is dropped, GLUE-style TSV (raw double quotes, no quoting) is read with
no quote processing, CSV with the usual quoting. Every row keeps the number a user finds it by: the
line in an editor (header = line 1) for CSV, TSV and JSON lines, the record number for Parquet and
Arrow. Errors are :class:`DatasetInvalid` naming the file, the row and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq

from slimbert.errors import DatasetInvalid

# Suffix -> format. ``.json`` holds JSON lines, or one JSON array of objects.
FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
ACCEPTED = "CSV (.csv), TSV (.tsv), JSON lines (.jsonl, .json), Parquet (.parquet), or a datasets save_to_disk folder"
# Split names a save_to_disk DatasetDict (or a file name, or a split column) may use for each split.
SPLIT_ALIASES: dict[str, str] = {"train": "train", "validation": "validation", "valid": "validation",
                                 "val": "validation", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class Table:
    """The rows of one file (or one split of a folder), each with the number a user finds it by."""

    file: str  # the name errors show: the file as the user gave it
    columns: list[str]
    rows: list[dict[str, Any]]
    numbers: list[int]  # per row: the 1-based line (CSV, TSV, JSON lines) or record (Parquet, Arrow)


def mb_limit_bytes(max_mb: int) -> int:
    return max_mb * 1_000_000


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_size(paths: Iterable[Path], max_mb: int) -> None:
    """Refuse inputs over ``max_mb`` (all files together) before a byte of them is parsed."""
    sizes = {p: tree_bytes(p) for p in paths}
    total = sum(sizes.values())
    if total > mb_limit_bytes(max_mb):
        biggest = max(sizes, key=sizes.__getitem__)
        raise DatasetInvalid(
            f"the dataset is {total / 1e6:.1f} MB, over the {max_mb} MB limit", file=biggest.name,
            hint=f"upload fewer rows, or raise SLIMBERT_MAX_DATASET_MB (now {max_mb})")


def format_of(path: Path, name: str | None = None) -> str:
    """The format of a file by its suffix (``name`` is the name the user gave it, if different)."""
    shown = name or path.name
    fmt = FORMATS.get(Path(shown).suffix.lower())
    if fmt is None:
        raise DatasetInvalid(f"unknown file type {Path(shown).suffix or '(no suffix)'!r}", file=shown,
                             hint=f"accepted: {ACCEPTED}")
    return fmt


def _decode(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetInvalid(
            f"byte {data[exc.start:exc.start + 1]!r} at offset {exc.start} is not UTF-8", file=shown, row=line,
            hint="re-save the file as UTF-8 (in Excel: 'CSV UTF-8'; in Python: open(..., encoding='utf-8'))",
        ) from exc


def _read_delimited(text: str, shown: str, *, tsv: bool) -> Table:
    # GLUE's TSVs hold raw, unbalanced double quotes: quoting would swallow rows, so TSV has none.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=not tsv)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DatasetInvalid(f"unreadable header: {exc}", file=shown, row=1,
                             hint="the first line must name the columns") from exc
    if not header:
        raise DatasetInvalid("the file is empty", file=shown, hint="the first line must name the columns")
    columns = [c.strip() for c in header]
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: the row is where it starts
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetInvalid(f"unreadable row: {exc}", file=shown, row=start,
                                 hint="close the quotes of every quoted field (a quote inside one is doubled)"
                                 ) from exc
        if not fields or fields == [""]:
            continue  # blank line
        if len(fields) != len(columns):
            sep = "tab" if tsv else "comma"
            raise DatasetInvalid(
                f"the row has {len(fields)} fields, the header has {len(columns)}", file=shown, row=start,
                hint=("remove tabs inside fields" if tsv else "quote fields that contain commas, e.g. \"a, b\"")
                + f", so that each row has one {sep}-separated field per column")
        rows.append(dict(zip(columns, fields, strict=True)))
        numbers.append(start)
    return Table(shown, columns, rows, numbers)


def _columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _read_jsonl(text: str, shown: str) -> Table:
    body = text.lstrip()
    if body.startswith("["):  # a .json file holding one array of objects
        try:
            items = json.loads(body)
        except json.JSONDecodeError as exc:
            raise DatasetInvalid(f"not valid JSON: {exc.msg}", file=shown, row=exc.lineno,
                                 hint="write one JSON object per line (JSON lines), or one valid array") from exc
        numbered = list(enumerate(items, start=1))
    else:
        numbered = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetInvalid(f"not valid JSON: {exc.msg}", file=shown, row=lineno,
                                     hint="write one JSON object per line") from exc
    for number, item in numbered:
        if not isinstance(item, dict):
            raise DatasetInvalid(f"expected a JSON object, got {type(item).__name__}", file=shown, row=number,
                                 hint='each row is an object, e.g. {"text": "...", "label": "..."}')
    rows = [item for _, item in numbered]
    return Table(shown, _columns_of(rows), rows, [n for n, _ in numbered])


def _read_parquet(path: Path, shown: str) -> Table:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several error types for a damaged file
        raise DatasetInvalid(f"not a readable Parquet file: {exc}", file=shown,
                             hint="write it with pandas.DataFrame.to_parquet or pyarrow.parquet.write_table") from exc
    rows = table.to_pylist()
    return Table(shown, list(table.column_names), rows, list(range(1, len(rows) + 1)))


def read_file(path: Path, name: str | None = None) -> Table:
    """One CSV, TSV, JSON lines or Parquet file as a table; ``name`` is what errors call it."""
    shown = name or path.name
    fmt = format_of(path, shown)
    if fmt == "parquet":
        return _read_parquet(path, shown)
    text = _decode(path.read_bytes(), shown)
    if fmt == "jsonl":
        return _read_jsonl(text, shown)
    return _read_delimited(text, shown, tsv=fmt == "tsv")


def hf_datasets() -> ModuleType:
    """The ``datasets`` library, imported on first use."""
    import datasets  # pandas and the hub client behind it (two seconds): only for Arrow folders and the hub

    return datasets


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))


def tables_from_arrow(data: Any, shown: str) -> dict[str, Table]:
    """The splits of a ``datasets`` Dataset (as "all") or DatasetDict; ClassLabel ids become their names."""
    parts = dict(data) if hasattr(data, "keys") else {"all": data}
    out: dict[str, Table] = {}
    for key, ds in parts.items():
        split = "all" if key == "all" else SPLIT_ALIASES.get(str(key).lower())
        if split is None:
            raise DatasetInvalid(f"unknown split {key!r}", file=shown,
                                 hint=f"name the splits {', '.join(sorted(set(SPLIT_ALIASES.values())))}")
        rows = ds.to_list()
        for column, feature in ds.features.items():
            if hasattr(feature, "int2str") and getattr(feature, "names", None):
                for row in rows:
                    if isinstance(row.get(column), int) and 0 <= row[column] < len(feature.names):
                        row[column] = feature.int2str(row[column])
        out[split] = Table(f"{shown} ({key})", list(ds.column_names), rows, list(range(1, len(rows) + 1)))
    return out


def read_saved(path: Path, name: str | None = None) -> dict[str, Table]:
    """A ``save_to_disk`` folder's splits ("all" for a single Dataset)."""
    shown = name or path.name
    try:
        data = hf_datasets().load_from_disk(str(path))
    except Exception as exc:  # datasets raises several error types for a damaged folder
        raise DatasetInvalid(f"not a readable save_to_disk folder: {exc}", file=shown,
                             hint="write it with Dataset.save_to_disk or DatasetDict.save_to_disk") from exc
    return tables_from_arrow(data, shown)


@dataclass(frozen=True)
class RawDataset:
    """What a user gave, read: tables ({"all": ...} or per split), the original files to keep, and the source."""

    source: str  # "upload", "path:<path>" or "hub:<id>[/<config>]"
    tables: dict[str, Table]
    files: list[tuple[Path, str, str]]  # (where it is now, its name as given, "all" or its split)


def open_inputs(files: Mapping[str, Path], *, source: str, max_mb: int,
                names: Mapping[str, str] | None = None) -> RawDataset:
    """Read ``files`` ({"all": one file or save_to_disk folder} or {"train": ..., "validation": ..., "test": ...}).

    The size limit is checked on the bytes before any parsing; ``names`` are the names the user gave.
    """
    check_size(files.values(), max_mb)
    tables: dict[str, Table] = {}
    kept: list[tuple[Path, str, str]] = []
    for role, path in files.items():
        shown = (names or {}).get(role) or path.name
        if is_saved_dataset(path):
            saved = read_saved(path, shown)
            if role != "all" and set(saved) != {"all"}:
                raise DatasetInvalid("a save_to_disk DatasetDict given as one split", file=shown,
                                     hint="give the DatasetDict folder alone, or one Dataset folder per split")
            tables.update(saved if role == "all" else {role: saved["all"]})
        elif path.is_dir():
            raise DatasetInvalid("a folder where a file was expected", file=shown, hint=f"accepted: {ACCEPTED}")
        else:
            tables[role] = read_file(path, shown)
        kept.append((path, shown, role))
    return RawDataset(source, tables, kept)
