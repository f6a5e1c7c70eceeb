"""From tables and a column mapping to checked splits: texts, labels by name, and the label order.

Every refusal is a :class:`DatasetInvalid` that names the file, the row, the column and the fix, so
a user can open the file in an editor and go straight to the line.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from slimbert.data import TextDataset
from slimbert.datasets.manifest import SPLITS, ColumnMapping, LengthStats, SplitStats
from slimbert.datasets.read import SPLIT_ALIASES, Table
from slimbert.errors import DatasetInvalid

MAX_LABELS = 100
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None
    label: str  # the label's name
    file: str
    row: int


@dataclass(frozen=True)
class BuiltSplits:
    """The checked splits of a dataset, examples labelled by name, and the names in label-id order."""

    label_names: list[str]
    splits: dict[str, list[Example]]  # only the splits that have rows
    given: list[str]

    def dataset(self, split: str, source: str) -> TextDataset:
        return to_text_dataset(self.splits[split], self.label_names, source)


def to_text_dataset(examples: Sequence[Example], label_names: Sequence[str], source: str) -> TextDataset:
    ids = {name: i for i, name in enumerate(label_names)}
    pairs = [e.pair or "" for e in examples] if examples and examples[0].pair is not None else None
    return TextDataset([e.text for e in examples], [ids[e.label] for e in examples], source, pairs,
                       tuple(label_names))


def order_labels(names: set[str]) -> list[str]:
    """Label names in id order: numeric when every name is an integer ("2" before "10"), else lexicographic."""
    if names and all(_INTEGER.match(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _cell(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from a float column of labels is the label "1"
    return str(value)


def _check_columns(table: Table, columns: ColumnMapping, *, with_split: bool) -> None:
    wanted = [("text_column", columns.text_column), ("text_pair_column", columns.text_pair_column),
              ("label_column", columns.label_column)]
    if with_split:
        wanted.append(("split_column", columns.split_column))
    for field, column in wanted:
        if column is not None and column not in table.columns:
            has = ", ".join(repr(c) for c in table.columns) or "none"
            raise DatasetInvalid(f"no column {column!r}; the file has columns {has}", file=table.file,
                                 column=column, hint=f"set {field} to one of the file's columns")


def _examples(table: Table, columns: ColumnMapping) -> list[tuple[Example, str | None]]:
    """Each row as an example plus the raw value of its split column (None without one)."""
    out: list[tuple[Example, str | None]] = []
    for row, number in zip(table.rows, table.numbers, strict=True):
        texts: list[str | None] = []
        for column in (columns.text_column, columns.text_pair_column):
            if column is None:
                texts.append(None)
                continue
            text = _cell(row, column)
            if text is None or not text.strip():
                raise DatasetInvalid("empty text", file=table.file, row=number, column=column,
                                     hint="fill in the text or remove the row")
            texts.append(text)
        label = _cell(row, columns.label_column)
        if label is None or not label.strip():
            raise DatasetInvalid("empty label", file=table.file, row=number, column=columns.label_column,
                                 hint="give every row a label, or remove the row")
        split = _cell(row, columns.split_column) if columns.split_column else None
        out.append((Example(str(texts[0]), texts[1], label.strip(), table.file, number), split))
    return out


def _split_of(value: str | None, example: Example, column: str) -> str:
    split = SPLIT_ALIASES.get((value or "").strip().lower())
    if split is None:
        raise DatasetInvalid(f"unknown split {value!r}", file=example.file, row=example.row, column=column,
                             hint="use train, validation or test in the split column")
    return split


def build_splits(tables: Mapping[str, Table], columns: ColumnMapping) -> BuiltSplits:
    """Check the tables against ``columns`` and return the splits, labelled by name.

    ``tables`` is either {"all": one table} (split by ``columns.split_column``, or all train without
    one) or one table per split, "train" required.
    """
    keys = set(tables)
    if "all" in keys and len(keys) > 1 or not keys or not keys <= {"all", *SPLITS}:
        raise DatasetInvalid(f"cannot combine the inputs {sorted(keys)}",
                             hint="give one file (with an optional split column) or files train, validation, test")
    if "all" not in keys and "train" not in keys:
        raise DatasetInvalid(f"no train split among {sorted(keys)}", hint="give a train file")
    if columns.split_column and "all" not in keys:
        raise DatasetInvalid("split_column works with a single file", column=columns.split_column,
                             hint="drop split_column when you give train/validation/test files")
    splits: dict[str, list[Example]] = {}
    for key, table in tables.items():
        with_split = key == "all" and columns.split_column is not None
        _check_columns(table, columns, with_split=with_split)
        for example, raw_split in _examples(table, columns):
            split = _split_of(raw_split, example, str(columns.split_column)) if with_split else (
                "train" if key == "all" else key)
            splits.setdefault(split, []).append(example)
    if not splits.get("train"):
        where = f"no row has split 'train' in column {columns.split_column!r}" if columns.split_column else "no rows"
        raise DatasetInvalid(f"the training split is empty: {where}", file=next(iter(tables.values())).file,
                             column=columns.split_column, hint="give at least two labelled training rows per class")
    ordered = {s: splits[s] for s in SPLITS if s in splits}
    return BuiltSplits(_check_labels(ordered, columns.label_column), ordered, list(ordered))


def _check_labels(splits: dict[str, list[Example]], column: str) -> list[str]:
    train = splits["train"]
    counts = Counter(e.label for e in train)
    if len(counts) > MAX_LABELS:
        raise DatasetInvalid(f"{len(counts)} distinct labels, more than {MAX_LABELS}", file=train[0].file,
                             column=column,
                             hint="check that label_column names the label and not a text or id column")
    if len(counts) < 2:
        raise DatasetInvalid(f"one class only ({next(iter(counts))!r}): a classifier needs at least two",
                             file=train[0].file, column=column,
                             hint="add rows of the other classes, or check label_column")
    for split in ("validation", "test"):
        for e in splits.get(split, []):
            if e.label not in counts:
                raise DatasetInvalid(
                    f"label {e.label!r} of the {split} split never appears in train", file=e.file, row=e.row,
                    column=column, hint=f"add training rows labelled {e.label!r}, or remove it from {split}")
    return order_labels(set(counts))


def _percentile(ordered: Sequence[int], q: float) -> int:
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def length_stats(lengths: Sequence[int]) -> LengthStats:
    ordered = sorted(lengths) or [0]
    return LengthStats(p50=_percentile(ordered, 50), p90=_percentile(ordered, 90), p99=_percentile(ordered, 99),
                       max=ordered[-1])


def example_lengths(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase | None) -> list[int]:
    """Tokens per example with ``tokenizer`` (special tokens included, no truncation), else whitespace words."""
    if tokenizer is None:
        return [len(e.text.split()) + (len(e.pair.split()) if e.pair is not None else 0) for e in examples]
    lengths: list[int] = []
    for start in range(0, len(examples), 1000):
        chunk = examples[start:start + 1000]
        pairs = [e.pair or "" for e in chunk] if chunk[0].pair is not None else None
        ids = tokenizer([e.text for e in chunk], pairs, truncation=False, verbose=False)["input_ids"]
        lengths += [len(x) for x in ids]
    return lengths


def split_stats(built: BuiltSplits, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, SplitStats]:
    out: dict[str, SplitStats] = {}
    for split, examples in built.splits.items():
        counts = Counter(e.label for e in examples)
        out[split] = SplitStats(rows=len(examples), labels={n: counts[n] for n in built.label_names if counts[n]},
                                lengths=length_stats(example_lengths(examples, tokenizer)))
    return out
