"""Datasets: GLUE SST-2 from a local TSV directory or, where the network allows, the hub, and the three
splits every job runs on.

Select on validation, report on test: early stopping, layer sensitivity, autotune's gate and the
showdown's recommendations read ``validation``; the accuracy a user sees comes from ``test``, which
nothing chose on. GLUE hides SST-2's test labels, so GLUE's dev split is the test split and
validation is carved from train (stratified, seeded) before any training subset is drawn.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from slimbert.errors import DatasetUnavailable
from slimbert.records import MetricName, Task
from slimbert.store.store import sha256_file

log = logging.getLogger(__name__)

SST2_LABELS = {0: "negative", 1: "positive"}
SST2_VALIDATION_EXAMPLES = 872  # as many as GLUE's dev, which is the test split
_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


# One example's input: a sentence, or a sentence pair for pair tasks (paraphrase, entailment).
Text = str | tuple[str, str]


def split_pairs(inputs: Sequence[Text]) -> tuple[list[str], list[str] | None]:
    """(first sentences, second sentences or None): the two lists a tokenizer takes for pairs."""
    if all(isinstance(x, str) for x in inputs):
        return [str(x) for x in inputs], None
    if all(isinstance(x, tuple) and len(x) == 2 for x in inputs):
        return [x[0] for x in inputs], [x[1] for x in inputs]
    raise ValueError("a batch mixes single sentences and sentence pairs: send one kind")


def tokenize(tokenizer: PreTrainedTokenizerBase, inputs: Sequence[Text], **kwargs: Any) -> Any:
    """``tokenizer`` called on sentences or on sentence pairs (as its two text arguments)."""
    first, second = split_pairs(inputs)
    return tokenizer(first, second, **kwargs)


def text_length(x: Text) -> int:
    """Characters in a sentence or a pair: a cheap proxy for token length, for length bucketing."""
    return len(x) if isinstance(x, str) else len(x[0]) + len(x[1])


@dataclass(frozen=True)
class TextDataset:
    """Labelled examples: ``texts`` (and ``pairs``, the second sentences of a pair task), label ids
    indexing ``label_names`` (empty where the names are not known, e.g. SST-2's ids 0 and 1)."""

    texts: list[str]
    labels: list[int]
    source: str
    pairs: list[str] | None = None
    label_names: tuple[str, ...] = ()
    # How a model is scored on these examples when something chooses on them (early stopping,
    # sensitivity): the task's primary metric, which the job sets on all three splits.
    metric: MetricName = "accuracy"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels) or (self.pairs is not None and len(self.pairs) != len(self.texts)):
            raise ValueError(f"{len(self.texts)} texts, {len(self.labels)} labels"
                             + (f", {len(self.pairs)} second sentences" if self.pairs is not None else ""))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def inputs(self) -> list[Text]:
        """What a predictor takes: the sentences, or (sentence, sentence) tuples for a pair task."""
        if self.pairs is None:
            return list(self.texts)
        return list(zip(self.texts, self.pairs, strict=True))

    def take(self, ids: list[int]) -> TextDataset:
        """The examples at ``ids``, in that order, with the same source, pairing and label names."""
        return TextDataset([self.texts[i] for i in ids], [self.labels[i] for i in ids], self.source,
                           None if self.pairs is None else [self.pairs[i] for i in ids], self.label_names, self.metric)

    def subset(self, n: int | None, seed: int = 0) -> TextDataset:
        """A seeded random subset of ``n`` examples (all of them when n is None or too large)."""
        if n is None or n >= len(self.texts):
            return self
        order = list(range(len(self.texts)))
        random.Random(seed).shuffle(order)
        return self.take(order[:n])


def stratified_split(data: TextDataset, size: int, seed: int) -> tuple[TextDataset, TextDataset]:
    """(rest, carved): ``size`` examples carved out of ``data`` with each label's share kept, seeded.

    Per label, its share of ``size`` is rounded by largest remainder, so the sizes add up exactly and
    every label present in ``data`` with at least two examples keeps at least one on each side.
    """
    if not 0 < size < len(data):
        raise ValueError(f"cannot carve {size} examples out of {len(data)}: use between 1 and {len(data) - 1}")
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_label.setdefault(y, []).append(i)
    rng = random.Random(seed)
    exact = {y: size * len(idx) / len(data) for y, idx in sorted(by_label.items())}
    take = {y: int(v) for y, v in exact.items()}
    for y in sorted(exact, key=lambda y: exact[y] - take[y], reverse=True)[: size - sum(take.values())]:
        take[y] += 1
    carved: list[int] = []
    for y, idx in sorted(by_label.items()):
        shuffled = idx[:]
        rng.shuffle(shuffled)
        carved += shuffled[: min(take[y], len(idx) - 1) if len(idx) > 1 else take[y]]
    chosen = set(carved)
    return data.take([i for i in range(len(data)) if i not in chosen]), data.take(sorted(carved))


@dataclass(frozen=True)
class Splits:
    """The three splits of one job: train trains, validation selects, test reports."""

    train: TextDataset
    validation: TextDataset
    test: TextDataset
    how: dict[str, str]  # split -> where it came from, for the manifest and the showdown header
    dataset: str = "glue-sst2"  # a stored dataset's name, or the embedded default
    sha256: str | None = None  # of the dataset's stored files
    task: Task = "single"

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.train.label_names

    def describe(self, seed: int) -> dict[str, Any]:
        """What a manifest records about the splits: sizes, label counts, origin and seed."""
        def counts(d: TextDataset) -> dict[str, int]:
            name = (lambda y: d.label_names[y]) if d.label_names else str
            return {name(y): d.labels.count(y) for y in sorted(set(d.labels))}

        return {name: {"examples": len(d), "labels": counts(d), "from": self.how[name]}
                for name, d in (("train", self.train), ("validation", self.validation), ("test", self.test))
                } | {"seed": seed, "selects": "validation", "reports": "test", "dataset": self.dataset,
                     "sha256": self.sha256, "task": self.task}


def sst2_splits(local_dir: Path | None, *, offline: bool, validation_examples: int | None, seed: int,
                train_examples: int | None = None, test_examples: int | None = None) -> Splits:
    """SST-2's three splits: test is GLUE's dev (its test labels are hidden), validation is carved from
    GLUE's train (stratified, ``seed``), and train is what is left, optionally a seeded subset."""
    full_train = load_sst2("train", local_dir, offline=offline)
    validation_examples = validation_examples or SST2_VALIDATION_EXAMPLES
    train, validation = stratified_split(full_train, validation_examples, seed)
    test = load_sst2("validation", local_dir, offline=offline).subset(test_examples, seed)
    return Splits(train.subset(train_examples, seed), validation, test, {
        "train": f"GLUE SST-2 train minus validation ({len(train)} left)",
        "validation": f"{len(validation)} of GLUE SST-2 train, stratified by label, seed {seed}",
        "test": "GLUE SST-2 dev (GLUE's test labels are hidden)" + (f", {len(test)}-example subset" if test_examples
                                                                    else ""),
    }, sha256=_files_sha256([Path(full_train.source), Path(test.source)]))


def _files_sha256(paths: list[Path]) -> str | None:
    """One digest over the files' own digests (None for data that did not come from local files)."""
    if not all(p.is_file() for p in paths):
        return None
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_file(p).encode())
    return digest.hexdigest()


def read_tsv(path: Path) -> TextDataset:
    """Read GLUE's ``sentence<TAB>label`` format (header row, no quoting)."""
    texts: list[str] = []
    labels: list[int] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            texts.append(row["sentence"])
            labels.append(int(row["label"]))
    return TextDataset(texts, labels, str(path), label_names=tuple(SST2_LABELS.values()))


def load_sst2(split: str, local_dir: Path | None, *, offline: bool) -> TextDataset:
    """GLUE SST-2 ``train`` or ``validation``: local TSVs first, then the hub via ``datasets``."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    if local_dir is not None:
        path = Path(local_dir) / _SPLIT_FILES[split]
        if path.is_file():
            return read_tsv(path)
        log.warning("SST-2 %s not found at %s", split, path)
    if offline:
        raise DatasetUnavailable(
            f"GLUE SST-2 ({split}) is not available offline"
            + (f": no {_SPLIT_FILES[split]} in {local_dir}" if local_dir else ""),
            hint="set SLIMBERT_SST2_DIR to a directory holding train.tsv and dev.tsv "
            "(sentence<TAB>label, with a header), or set SLIMBERT_OFFLINE=false where the hub is reachable",
        )
    try:
        from datasets import load_dataset  # pyarrow and pandas behind it: only where the hub is reachable

        ds = load_dataset("glue", "sst2", split=split)
    except Exception as exc:  # network and hub errors come in many types
        raise DatasetUnavailable(
            f"could not load GLUE SST-2 from the hub: {exc}",
            hint="set SLIMBERT_SST2_DIR to a local directory holding train.tsv and dev.tsv",
        ) from exc
    return TextDataset(list(ds["sentence"]), [int(x) for x in ds["label"]], "hub:glue/sst2",
                       label_names=tuple(SST2_LABELS.values()))


# Sentences sorted by length within windows of this many batches: long enough to group similar
# lengths, short enough that every window still mixes the shuffled data.
_GROUP_WINDOW_BATCHES = 50


def _length_grouped(order: list[int], lengths: list[int], batch_size: int, rng: random.Random) -> list[int]:
    """``order`` regrouped into batches of similar ``lengths``, batches in random order."""
    window = batch_size * _GROUP_WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for batch in batches for i in batch]


def iter_batches(
    tokenizer: PreTrainedTokenizerBase,
    data: TextDataset,
    *,
    batch_size: int,
    max_length: int,
    shuffle: bool = False,
    seed: int = 0,
    pad_to_max: bool = False,
    group_by_length: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Tokenized batches with labels; dynamic padding (to the batch's longest) unless ``pad_to_max``.

    ``group_by_length`` (with ``shuffle``) batches sentences of similar length together, as
    transformers' ``LengthGroupedSampler`` does: SST-2 train phrases run from 1 to 50+ words, so random
    batches pad most rows to a long neighbour and waste the compute on padding.
    """
    order = list(range(len(data)))
    if shuffle:
        rng = random.Random(seed)
        rng.shuffle(order)
        if group_by_length:
            lengths = [len(t) + (len(data.pairs[i]) if data.pairs is not None else 0) for i, t in enumerate(data.texts)]
            order = _length_grouped(order, lengths, batch_size, rng)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [data.texts[i] for i in idx],
            None if data.pairs is None else [data.pairs[i] for i in idx],
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = dict(enc)
        batch["labels"] = torch.tensor([data.labels[i] for i in idx])
        yield batch

