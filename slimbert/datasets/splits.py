"""A stored dataset's three job splits: train trains, validation selects, test reports.

What the user gave is used as is; what is missing is carved from train, stratified by label and
seeded: test first (when not given), then validation, so the test rows were never near a choice.
"""

from __future__ import annotations

import random

from slimbert.data import Splits, TextDataset, stratified_split
from slimbert.errors import DatasetInvalid

VALIDATION_SHARE, VALIDATION_CAP = 0.10, 872
TEST_SHARE, TEST_CAP = 0.10, 2000


def _default_size(n: int, share: float, cap: int, classes: int) -> int:
    return max(min(cap, round(n * share)), classes, 1)


def _carve(data: TextDataset, size: int, seed: int, *, top_up: bool) -> tuple[TextDataset, TextDataset]:
    """(rest, carved) by :func:`stratified_split`, keeping every class in ``rest`` (train must see them all);
    with ``top_up`` every class with two or more examples also gets at least one carved example."""
    if not 0 < size < len(data):
        raise ValueError(size)
    # Split the positions (as texts) rather than the examples, so duplicate rows cannot be confused.
    positions = TextDataset([str(i) for i in range(len(data))], data.labels, data.source)
    carved_ids = {int(t) for t in stratified_split(positions, size, seed)[1].texts}
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_label.setdefault(y, []).append(i)
    rng = random.Random(seed)
    for _y, idx in sorted(by_label.items()):
        mine = [i for i in idx if i in carved_ids]
        if len(mine) == len(idx):  # a class of one example went to the carved side: train needs it
            carved_ids -= set(mine)
        elif top_up and not mine and len(idx) >= 2:
            carved_ids.add(rng.choice(idx))
    if not carved_ids:
        raise ValueError(size)
    return data.take([i for i in range(len(data)) if i not in carved_ids]), data.take(sorted(carved_ids))


def _carve_or_refuse(data: TextDataset, size: int, seed: int, *, top_up: bool, what: str, name: str
                     ) -> tuple[TextDataset, TextDataset]:
    try:
        return _carve(data, size, seed, top_up=top_up)
    except ValueError:
        raise DatasetInvalid(
            f"cannot carve a {what} split of {size} examples out of the {len(data)} training rows of {name!r}",
            hint=f"give a {what} file, a smaller {what}_examples, or more training rows") from None


def job_splits(stored: dict[str, TextDataset], *, validation_examples: int | None, test_examples: int | None,
               seed: int, name: str) -> Splits:
    """Train, validation and test for one job from a stored dataset's splits (``DatasetStore.load``).

    A given validation is used as is; a given test too (``test_examples`` draws a seeded subset of it).
    A missing test is carved from train first (``test_examples``, default 10% of train capped at 2000),
    then a missing validation (``validation_examples``, default 10% of what is left capped at 872, at
    least one example per class where possible), both stratified by label with ``seed``.
    """
    if "train" not in stored:
        raise DatasetInvalid(f"dataset {name!r} has no train split", hint="store it again with a train file")
    train = stored["train"]
    classes = len(set(train.labels))
    how: dict[str, str] = {}
    if "test" in stored:
        test = stored["test"].subset(test_examples, seed)
        how["test"] = f"{name} test as given" + (
            f", {len(test)}-example subset, seed {seed}" if len(test) < len(stored["test"]) else f" ({len(test)})")
    else:
        size = test_examples or _default_size(len(train), TEST_SHARE, TEST_CAP, classes)
        train, test = _carve_or_refuse(train, size, seed, top_up=test_examples is None, what="test", name=name)
        how["test"] = f"{len(test)} of {name} train, stratified by label, seed {seed}"
    if "validation" in stored:
        validation = stored["validation"]
        how["validation"] = f"{name} validation as given ({len(validation)})"
    else:
        size = validation_examples or _default_size(len(train), VALIDATION_SHARE, VALIDATION_CAP, classes)
        train, validation = _carve_or_refuse(train, size, seed, top_up=validation_examples is None,
                                             what="validation", name=name)
        how["validation"] = f"{len(validation)} of {name} train, stratified by label, seed {seed}"
    carved = [s for s in ("test", "validation") if s not in stored]
    how["train"] = (f"{name} train minus {' and '.join(carved)} ({len(train)} left)" if carved
                    else f"{name} train as given ({len(train)})")
    return Splits(train, validation, test, {k: how[k] for k in ("train", "validation", "test")})
