"""The three splits of a job, from its recipe's data fields: the embedded GLUE SST-2, or a stored dataset.

Compression, benchmark and autotune jobs all call :func:`load_splits` with the same recipe fields, so a
benchmark scores a family on exactly the test split its variants were reported on when they were made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from slimbert.config import Settings
from slimbert.data import SST2_LABELS, Splits, TextDataset, load_sst2, sst2_splits
from slimbert.datasets import job_splits, open_dataset_store
from slimbert.errors import DatasetNotFound, InvalidRecipe
from slimbert.metrics import choose_metric
from slimbert.models import classifier_labels
from slimbert.records import MetricChoice, MetricName


def load_splits(settings: Settings, *, dataset: str | None, seed: int, validation_examples: int | None,
                test_examples: int | None, train_examples: int | None, metric: MetricChoice = "auto") -> Splits:
    """Train (a seeded subset of at most ``train_examples``, capped by the setting), validation and test,
    each scored by the task's primary metric (``metric``, or chosen from the task and train's labels)."""
    cap = min(train_examples or settings.max_train_examples, settings.max_train_examples)
    if dataset is None:
        return with_metric(sst2_splits(settings.sst2_dir, offline=settings.offline,
                                       validation_examples=validation_examples, seed=seed,
                                       test_examples=test_examples, train_examples=cap), metric)
    store = open_dataset_store(settings)
    manifest = store.get(dataset)
    splits = job_splits(store.load(dataset), validation_examples=validation_examples, test_examples=test_examples,
                        seed=seed, name=dataset)
    train = splits.train.subset(cap, seed)
    how = dict(splits.how)
    if len(train) < len(splits.train):
        how["train"] += f"; a seeded {len(train)}-example subset"
    return with_metric(dataclasses.replace(splits, train=train, how=how, dataset=dataset, sha256=manifest.sha256,
                                           task=manifest.task), metric)


def with_metric(splits: Splits, requested: MetricChoice) -> Splits:
    """``splits`` with the primary metric set on each split (chosen on train's label counts, never test's)."""
    counts = [splits.train.labels.count(i) for i in range(len(splits.label_names))]
    metric = choose_metric(requested, pair=splits.task == "pair", label_counts=counts)
    return dataclasses.replace(splits, **{name: dataclasses.replace(getattr(splits, name), metric=metric)
                                          for name in ("train", "validation", "test")})


def in_label_order(splits: Splits, names: dict[int, str]) -> Splits:
    """``splits`` with label ids renumbered to ``names`` (a fine-tuned model's id2label, same names)."""
    new_id = {n: i for i, n in names.items()}
    order = tuple(names[i] for i in sorted(names))

    def relabel(d: TextDataset) -> TextDataset:
        return dataclasses.replace(d, labels=[new_id[d.label_names[y]] for y in d.labels], label_names=order)

    return dataclasses.replace(splits, train=relabel(splits.train), validation=relabel(splits.validation),
                               test=relabel(splits.test))


def splits_of_recipe(settings: Settings, recipe: dict[str, Any]) -> Splits:
    """The splits a stored variant's recipe (its manifest's ``recipe``, as JSON) was made and reported on."""
    return load_splits(settings, dataset=recipe.get("dataset"), seed=int(recipe.get("data_seed", 0)),
                       validation_examples=recipe.get("validation_examples"),
                       test_examples=recipe.get("test_examples", recipe.get("dev_examples")),
                       train_examples=recipe.get("train_examples"), metric=recipe.get("metric", "auto"))


def test_split_of(settings: Settings, recipe: dict[str, Any], labels: dict[int, str], metric: MetricName
                  ) -> TextDataset:
    """The test split a stored variant was reported on (from its manifest's recipe, labels and metric), label
    ids in the model's order. SST-2's is GLUE's dev whatever the carve, so its train file is not read."""
    if recipe.get("dataset") is None:
        test = load_sst2("validation", settings.sst2_dir, offline=settings.offline).subset(
            recipe.get("test_examples", recipe.get("dev_examples")), int(recipe.get("data_seed", 0)))
        splits = Splits(test, test, test, {})
    else:
        splits = splits_of_recipe(settings, recipe)
    return dataclasses.replace(in_label_order(splits, labels).test, metric=metric)


def check_recipe_data(settings: Settings, *, dataset: str | None, metric: MetricChoice, base_path: str) -> None:
    """Refuse, when a job is submitted, what would fail it later: an unknown dataset, a fine-tuned base model
    whose labels are not the dataset's, a metric the task cannot have."""
    if dataset is None:
        names, pair, counts = list(SST2_LABELS.values()), False, [1, 1]
    else:
        try:
            manifest = open_dataset_store(settings).get(dataset)
        except DatasetNotFound as exc:
            raise InvalidRecipe(f"recipe.dataset: {exc.detail}", hint=exc.hint) from None
        names, pair = manifest.label_names, manifest.task == "pair"
        train = manifest.splits.get("train")
        counts = [train.labels.get(n, 0) for n in names] if train else [1] * len(names)
    classifier_labels(base_path, names)
    try:
        choose_metric(metric, pair=pair, label_counts=counts)
    except ValueError as exc:
        raise InvalidRecipe(f"recipe.metric: {exc}", hint="use 'auto', 'accuracy' or 'macro_f1'") from None
