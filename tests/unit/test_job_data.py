"""A job's data from its recipe: a stored dataset's splits, the primary metric, a fine-tuned model's label
order, sentence pairs through tokenization and the predictors, and what submission refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from slimbert.compression.recipe import Recipe
from slimbert.config import Settings
from slimbert.data import Splits, TextDataset, iter_batches
from slimbert.datasets import ColumnMapping, DatasetStore, open_inputs
from slimbert.errors import InvalidRecipe, LabelMismatch
from slimbert.inference.predictor import TorchPredictor
from slimbert.models import classifier_labels, load_tokenizer
from slimbert.splits import check_recipe_data, in_label_order, load_splits
from tests.conftest import save_tiny_classifier


def _settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", _env_file=None)  # type: ignore[call-arg]


def _store_pairs(settings: Settings, tmp_path: Path, name: str = "pairs") -> None:
    rows = ["a\tb\tlabel"] + [f"first {i} \"quoted\tsecond {i}\t{'same' if i % 3 else 'different'}"
                              for i in range(90)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    raw = open_inputs({"train": tmp_path / "train.tsv"}, source="upload", max_mb=5)
    DatasetStore(settings.dataset_dir).create(name, raw, ColumnMapping(text_column="a", text_pair_column="b",
                                                                       label_column="label"))


def test_a_stored_pair_dataset_gives_three_splits_and_its_metric(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _store_pairs(settings, tmp_path)
    splits = load_splits(settings, dataset="pairs", seed=0, validation_examples=None, test_examples=None,
                         train_examples=40)
    # Train alone: test carved first (10%), then validation (10% of the rest); train then subset to 40.
    assert (len(splits.test), len(splits.validation), len(splits.train)) == (9, 8, 40)
    assert splits.task == "pair" and splits.dataset == "pairs" and splits.sha256
    assert splits.label_names == ("different", "same")
    # Binary pairs: F1 of the positive class (label id 1, "same"), set on every split.
    assert {d.metric for d in (splits.train, splits.validation, splits.test)} == {"f1"}
    assert splits.test.pairs is not None and splits.test.inputs[0][1].startswith("second")
    assert not set(splits.test.texts) & set(splits.validation.texts)
    described = splits.describe(0)
    assert described["dataset"] == "pairs" and described["task"] == "pair"
    assert described["train"]["from"].endswith("a seeded 40-example subset")
    # The same recipe fields give the same splits (benchmarks and autotune rebuild them).
    again = load_splits(settings, dataset="pairs", seed=0, validation_examples=None, test_examples=None,
                        train_examples=40)
    assert again.test.texts == splits.test.texts and again.train.texts == splits.train.texts
    assert load_splits(settings, dataset="pairs", seed=0, validation_examples=None, test_examples=None,
                       train_examples=40, metric="accuracy").test.metric == "accuracy"


def test_pairs_reach_the_tokenizer_as_two_segments(tmp_path: Path, tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = TextDataset(["the cat sat", "a dog"], [0, 1], "t", pairs=["on the mat", "ran off"], label_names=("n", "y"))
    batch = next(iter_batches(tokenizer, data, batch_size=2, max_length=32))
    # Segment B (token_type_ids 1) exists only because the pair was passed as the tokenizer's second text.
    assert batch["token_type_ids"].max().item() == 1
    predictor = TorchPredictor(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir), tokenizer,
                               {0: "n", 1: "y"})
    enc = predictor.encode(data.inputs)
    assert torch.equal(enc["input_ids"], batch["input_ids"])
    out = predictor.predict(data.inputs)
    assert [p.label for p in out.predictions] == [["n", "y"][i] for i in out.logits.argmax(1)]
    with pytest.raises(ValueError, match="mixes"):
        predictor.encode(["alone", ("a", "b")])


def test_a_fine_tuned_models_label_order_is_kept(tmp_path: Path) -> None:
    model_dir = save_tiny_classifier(tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(id2label={"0": "positive", "1": "negative"}, label2id={"positive": 0, "negative": 1})
    (model_dir / "config.json").write_text(json.dumps(config))
    own = classifier_labels(str(model_dir), ["negative", "positive"])
    assert own == {0: "positive", 1: "negative"}
    data = TextDataset(["good", "bad"], [1, 0], "t", label_names=("negative", "positive"))
    relabelled = in_label_order(Splits(data, data, data, {}), own)
    # "good" is positive: id 1 in the dataset's order, id 0 in the model's.
    assert relabelled.test.labels == [0, 1] and relabelled.test.label_names == ("positive", "negative")
    with pytest.raises(LabelMismatch, match="labels"):
        classifier_labels(str(model_dir), ["billing", "shipping"])
    encoder = save_tiny_classifier(tmp_path / "e", head=False)
    assert classifier_labels(str(encoder), ["billing", "shipping"]) is None  # a base encoder gets a head


def test_submission_refuses_an_unknown_dataset_and_an_impossible_metric(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    encoder = str(save_tiny_classifier(tmp_path / "e", head=False))
    with pytest.raises(InvalidRecipe, match="recipe.dataset"):
        check_recipe_data(settings, dataset="nope", metric="auto", base_path=encoder)
    _store_pairs(settings, tmp_path)
    check_recipe_data(settings, dataset="pairs", metric="f1", base_path=encoder)
    assert Recipe(dataset="pairs").family_name() == "all-minilm-l6-v2-pairs"
    assert Recipe().family_name() == "all-minilm-l6-v2-sst2"


def test_showdown_gates_and_leads_with_the_primary_metric() -> None:
    from slimbert.report.render import to_markdown
    from slimbert.report.showdown import build_showdown
    from slimbert.store.manifest import Technique, VariantManifest

    def manifest(variant: str, acc: float, f1: float, size: int) -> VariantManifest:
        return VariantManifest(
            family="f", variant=variant, runtime="torch", precision="fp32", base_model_id="m",
            technique=Technique(name="t"), labels={0: "a", 1: "b", 2: "c"}, num_parameters=10, size_bytes=size,
            test_accuracy=acc, validation_accuracy=acc, metric="macro_f1", dataset="trec", task="single",
            test_metrics={"accuracy": acc, "macro_f1": f1}, validation_metrics={"accuracy": acc, "macro_f1": f1},
            splits={"dataset": "trec", "sha256": "ab" * 32, "task": "single", "seed": 0,
                    "test": {"examples": 500, "from": "trec test as given (500)"}})

    # The small variant keeps accuracy but loses the rare class: macro-F1 fails the gate, accuracy would pass.
    report = build_showdown("f", [manifest("baseline-fp32", 0.95, 0.93, 100), manifest("small", 0.95, 0.80, 10)],
                            None, gate=0.99)
    assert report.metric == "macro_f1" and report.recommendations.smallest.variant == "baseline-fp32"
    assert "validation macro_f1" in report.recommendations.rule
    rows = {r.variant: r for r in report.rows}
    assert rows["small"].test_metric_at_creation == 0.80
    text = to_markdown(report)
    assert "Dataset: trec (single, sha256 " in text and "primary metric: macro_f1" in text
