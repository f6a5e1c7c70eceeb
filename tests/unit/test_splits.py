"""Select on validation, report on test: the three splits of a job."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from slimbert.data import TextDataset, sst2_splits, stratified_split
from slimbert.store.manifest import Technique, VariantManifest


def _imbalanced(n: int = 300) -> TextDataset:
    labels = [0] * (n * 2 // 3) + [1] * (n // 3 - 5) + [2] * 5  # 200 / 95 / 5
    return TextDataset([f"text {i}" for i in range(len(labels))], labels, "fixture")


def test_stratified_split_keeps_each_label_share_and_is_disjoint() -> None:
    data = _imbalanced()
    rest, carved = stratified_split(data, 60, seed=3)
    assert len(carved) == 60 and len(rest) == len(data) - 60
    assert not set(rest.texts) & set(carved.texts)  # no example on both sides
    assert set(rest.texts) | set(carved.texts) == set(data.texts)
    assert Counter(carved.labels) == {0: 40, 1: 19, 2: 1}  # 2/3, 95/300 and 5/300 of 60, largest remainder
    assert 2 in rest.labels  # a rare label keeps an example on the training side


def test_stratified_split_is_seeded() -> None:
    data = _imbalanced()
    assert stratified_split(data, 60, seed=3)[1].texts == stratified_split(data, 60, seed=3)[1].texts
    assert stratified_split(data, 60, seed=3)[1].texts != stratified_split(data, 60, seed=4)[1].texts
    with pytest.raises(ValueError, match="between 1 and"):
        stratified_split(data, len(data), seed=0)


def test_sst2_test_is_glue_dev_and_validation_comes_from_train(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"train {i}\t{i % 2}\n" for i in range(100)))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"dev {i}\t{i % 2}\n" for i in range(20)))
    splits = sst2_splits(tmp_path, offline=True, validation_examples=10, seed=0, train_examples=50)
    assert set(splits.test.texts) == {f"dev {i}" for i in range(20)}  # GLUE's dev is the test split
    assert all(t.startswith("train") for t in splits.validation.texts)
    assert not set(splits.validation.texts) & set(splits.train.texts)  # validation is never trained on
    assert (len(splits.train), len(splits.validation)) == (50, 10)
    described = splits.describe(0)
    assert described["selects"] == "validation" and described["reports"] == "test"
    assert described["validation"]["labels"] == {"negative": 5, "positive": 5}


def test_old_manifests_read_dev_as_test() -> None:
    """Manifests stored before the splits called the test figure "dev"; they still load, as test."""
    old = VariantManifest.model_validate({
        "family": "f", "variant": "v", "runtime": "torch", "precision": "fp32", "base_model_id": "m",
        "technique": Technique(name="t"), "labels": {0: "a"}, "num_parameters": 1,
        "dev_accuracy": 0.8, "dev_examples": 872})
    assert (old.test_accuracy, old.test_examples, old.validation_accuracy) == (0.8, 872, None)
