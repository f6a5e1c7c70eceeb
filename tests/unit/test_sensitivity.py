"""Layer sensitivity by ablation and the layer-drop strategies."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification, PreTrainedModel

from slimbert.compression.sensitivity import (
    LayerScore,
    choose_layers_to_drop,
    layer_sensitivity,
    rank_layers,
)
from slimbert.runtime.shapes import encoder_layers

Batch = dict[str, torch.Tensor]


def layer_fingerprints(model: PreTrainedModel) -> list[float]:
    """One number per encoder layer that identifies it (a weight value)."""
    weights = [layer.get_parameter("attention.self.query.weight") for layer in encoder_layers(model)]
    return [float(w[0, 0].detach()) for w in weights]


def test_scores_identify_the_removed_layer_and_measure_drops_against_the_full_model(
    tiny_bert: BertForSequenceClassification,
) -> None:
    original = layer_fingerprints(tiny_bert)
    # A fake metric that reveals which layer each evaluated model lacks: accuracy 1.0 for the full
    # model, 0.9 - 0.2 * i without layer i, and loss 0.1 more per missing-layer index.
    seen: list[list[float]] = []

    def evaluate(model: PreTrainedModel) -> tuple[float, float]:
        prints = layer_fingerprints(model)
        seen.append(prints)
        assert model.config.num_hidden_layers == len(prints)
        if prints == original:
            return 1.0, 0.5
        (missing,) = [i for i, p in enumerate(original) if p not in prints]
        return 0.9 - 0.2 * missing, 0.5 + 0.1 * (3 - missing)

    progress: list[float] = []
    scores = layer_sensitivity(tiny_bert, evaluate, progress.append)

    assert [s.layer for s in scores] == [0, 1, 2, 3]
    assert [len(p) for p in seen] == [4, 3, 3, 3, 3]
    for s in scores:
        assert s.accuracy == pytest.approx(0.9 - 0.2 * s.layer)
        assert s.accuracy_drop == pytest.approx(1.0 - (0.9 - 0.2 * s.layer))
        assert s.loss_increase == pytest.approx(0.1 * (3 - s.layer))
    assert rank_layers(scores) == [0, 1, 2, 3]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(100.0) and len(progress) == 5


def test_sensitivity_does_not_mutate_the_model(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch
) -> None:
    before = copy.deepcopy(tiny_bert.state_dict())

    def evaluate(model: PreTrainedModel) -> tuple[float, float]:
        with torch.no_grad():
            out = model(input_ids=tiny_batch["input_ids"], attention_mask=tiny_batch["attention_mask"])
        acc = (out.logits.argmax(-1) == tiny_batch["labels"]).float().mean().item()
        return acc, F.cross_entropy(out.logits, tiny_batch["labels"]).item()

    scores = layer_sensitivity(tiny_bert, evaluate)

    assert len(scores) == 4
    assert tiny_bert.config.num_hidden_layers == 4 and len(tiny_bert.bert.encoder.layer) == 4
    after = tiny_bert.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    full_acc, full_loss = evaluate(tiny_bert)
    for s in scores:
        assert s.accuracy_drop == pytest.approx(full_acc - s.accuracy)
        assert s.loss_increase == pytest.approx(s.loss - full_loss)


def test_layer_score_to_json() -> None:
    score = LayerScore(layer=2, accuracy=0.8, loss=0.4, accuracy_drop=0.1, loss_increase=0.05)
    assert score.to_json() == {
        "layer": 2, "accuracy": 0.8, "loss": 0.4, "accuracy_drop": 0.1, "loss_increase": 0.05
    }


def test_rank_layers_breaks_accuracy_ties_by_loss() -> None:
    scores = [
        LayerScore(0, 0.9, 0.3, 0.05, 0.2),
        LayerScore(1, 0.9, 0.2, 0.05, 0.1),
        LayerScore(2, 0.95, 0.1, -0.01, 0.0),
        LayerScore(3, 0.5, 0.9, 0.45, 0.8),
    ]
    assert rank_layers(scores) == [2, 1, 0, 3]
    assert choose_layers_to_drop(4, 2, "sensitivity", scores) == [1, 2]


@pytest.mark.parametrize(
    ("num_layers", "count", "expected"),
    [(6, 2, [1, 3]), (6, 3, [1, 3, 5]), (12, 3, [1, 5, 9]), (12, 6, [1, 3, 5, 7, 9, 11]),
     (6, 4, [1, 2, 3, 5]), (6, 5, [1, 2, 3, 4, 5]), (4, 1, [1])],
)
def test_alternate_strategy(num_layers: int, count: int, expected: list[int]) -> None:
    assert choose_layers_to_drop(num_layers, count, "alternate") == expected


def test_top_strategy_and_fractions() -> None:
    assert choose_layers_to_drop(12, 4, "top") == [8, 9, 10, 11]
    assert choose_layers_to_drop(12, 0.5, "top") == [6, 7, 8, 9, 10, 11]
    assert choose_layers_to_drop(6, 0.01, "top") == [5]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((6, 2, "random"), "sensitivity, top, alternate"),
        ((6, 6, "top"), "between 1 and 5"),
        ((6, 0, "top"), "between 1 and 5"),
        ((6, 1.5, "top"), "fraction"),
        ((6, True, "top"), "bool"),
        ((1, 1, "top"), "num_layers"),
        ((6, 2, "sensitivity"), "needs scores"),
    ],
)
def test_choose_layers_validates(args: tuple[int, int | float, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_layers_to_drop(*args)


def test_sensitivity_scores_must_cover_every_layer() -> None:
    scores = [LayerScore(i, 0.9, 0.3, 0.0, 0.0) for i in range(3)]
    with pytest.raises(ValueError, match="cover layers 0..3"):
        choose_layers_to_drop(4, 1, "sensitivity", scores)


def test_single_layer_model_cannot_be_ablated() -> None:
    from tests.unit.conftest import make_tiny_bert

    with pytest.raises(ValueError, match="at least 2"):
        layer_sensitivity(make_tiny_bert(num_layers=1), lambda m: (1.0, 0.0))
