"""Head and FFN importance, physical pruning, reload round trips and the gradual pruner."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, PreTrainedModel

from slimbert.compression.gradual import GradualPruner
from slimbert.compression.heads import (
    alive_heads,
    count_encoder_parameters,
    ffn_importance,
    head_importance,
    prune_ffn,
    prune_heads,
    select_ffn_to_keep,
    select_heads_to_prune,
)
from slimbert.compression.layers import drop_layers
from slimbert.compression.schedules import cubic_sparsity
from slimbert.runtime.shapes import encoder_layers, ffn_linears, from_pretrained_pruned
from tests.unit.conftest import make_tiny_bert

Batch = dict[str, torch.Tensor]


def logits(model: PreTrainedModel, batch: Batch, **kw: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw
        ).logits
    return out


# ---------------------------------------------------------------- importance


def test_head_importance_matches_model_level_head_mask_gradient(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch
) -> None:
    scores = head_importance(tiny_bert, [tiny_batch, tiny_batch], normalize=False)

    mask = torch.ones(4, 4, requires_grad=True)
    reference = copy.deepcopy(tiny_bert)
    reference(**tiny_batch, head_mask=mask).loss.backward()
    assert mask.grad is not None
    assert scores.shape == (4, 4)
    torch.testing.assert_close(scores, 2 * mask.grad.abs(), rtol=1e-4, atol=1e-12)


def test_head_importance_is_l2_normalised_per_layer_and_leaves_grads_alone(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch
) -> None:
    tiny_bert.train()
    scores = head_importance(tiny_bert, [tiny_batch] * 5, max_batches=2)
    torch.testing.assert_close(scores.norm(dim=-1), torch.ones(4))
    assert (scores >= 0).all()
    assert all(p.grad is None for p in tiny_bert.parameters()), "must not touch the optimizer's .grad"
    assert tiny_bert.training, "train/eval mode restored"
    assert tiny_bert.config._attn_implementation == "sdpa"


def test_head_importance_after_pruning_scores_pruned_heads_zero(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch
) -> None:
    prune_heads(tiny_bert, {1: [0, 2]})
    scores = head_importance(tiny_bert, [tiny_batch])
    assert scores.shape == (4, 4)
    assert scores[1, 0] == 0 and scores[1, 2] == 0
    assert (scores[1, [1, 3]] > 0).all()


def test_importance_needs_labels(tiny_bert: BertForSequenceClassification, tiny_batch: Batch) -> None:
    unlabelled = {k: v for k, v in tiny_batch.items() if k != "labels"}
    with pytest.raises(ValueError, match="labels"):
        head_importance(tiny_bert, [unlabelled])


def test_ffn_weight_norm_importance(tiny_bert: BertForSequenceClassification) -> None:
    scores = ffn_importance(tiny_bert, "weight_norm")
    assert [s.shape for s in scores] == [torch.Size([64])] * 4
    layer = tiny_bert.bert.encoder.layer[2]
    up_row = layer.intermediate.dense.weight[7]
    down_col = layer.output.dense.weight[:, 7]
    expected = torch.sqrt((up_row**2).sum()) * torch.sqrt((down_col**2).sum())
    assert scores[2][7].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ffn_gradient_importance(tiny_bert: BertForSequenceClassification, tiny_batch: Batch) -> None:
    for p in tiny_bert.parameters():
        p.requires_grad_(False)  # a frozen model must still yield activation gradients
    scores = ffn_importance(tiny_bert, "gradient", [tiny_batch])
    assert [s.shape for s in scores] == [torch.Size([64])] * 4
    assert all((s >= 0).all() and s.sum() > 0 for s in scores)


def test_ffn_importance_rejects_bad_arguments(tiny_bert: BertForSequenceClassification) -> None:
    with pytest.raises(ValueError, match="weight_norm, gradient"):
        ffn_importance(tiny_bert, "random")
    with pytest.raises(ValueError, match="batches"):
        ffn_importance(tiny_bert, "gradient")


# ---------------------------------------------------------------- head pruning


def test_prune_heads_equals_masking_them_and_reloads(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    mask = torch.ones(4, 4)
    mask[0, 1] = mask[2, 0] = mask[2, 3] = 0
    masked = logits(tiny_bert, tiny_batch, head_mask=mask)
    before = count_encoder_parameters(tiny_bert)

    prune_heads(tiny_bert, {0: [1], 2: [0, 3]})

    assert count_encoder_parameters(tiny_bert) < before
    assert alive_heads(tiny_bert).sum() == 13
    torch.testing.assert_close(logits(tiny_bert, tiny_batch), masked, rtol=0, atol=1e-5)
    tiny_bert.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, tiny_batch), logits(tiny_bert, tiny_batch), rtol=0, atol=0)


def test_prune_heads_keeps_at_least_one_head(tiny_bert: BertForSequenceClassification) -> None:
    prune_heads(tiny_bert, {1: [0, 1]})
    with pytest.raises(ValueError, match="no head"):
        prune_heads(tiny_bert, {1: [2, 3]})
    with pytest.raises(ValueError, match="out of range"):
        prune_heads(tiny_bert, {0: [4]})
    assert alive_heads(tiny_bert)[1].tolist() == [False, False, True, True]


def test_select_heads_ranks_globally_but_keeps_one_per_layer() -> None:
    importance = torch.tensor([[0.1, 0.2], [0.9, 0.8], [0.3, 0.05]])
    alive = torch.ones(3, 2, dtype=torch.bool)
    assert select_heads_to_prune(importance, alive, 2) == {2: [1], 0: [0]}
    assert select_heads_to_prune(importance, alive, 10) == {2: [1], 0: [0], 1: [1]}


# ---------------------------------------------------------------- FFN pruning


def test_prune_ffn_equals_zeroing_neurons_and_reloads_exactly(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    keep = {0: torch.arange(0, 64, 2), 3: torch.tensor([5, 1, 60])}
    zeroed = copy.deepcopy(tiny_bert)
    with torch.no_grad():
        for i, idx in keep.items():
            drop = torch.ones(64, dtype=torch.bool)
            drop[idx] = False
            zeroed.bert.encoder.layer[i].output.dense.weight[:, drop] = 0
    before = count_encoder_parameters(tiny_bert)

    prune_ffn(tiny_bert, keep)

    assert count_encoder_parameters(tiny_bert) == before - (32 + 61) * (32 + 32 + 1)
    assert tiny_bert.config.intermediate_sizes == [32, 64, 64, 3]
    torch.testing.assert_close(logits(tiny_bert, tiny_batch), logits(zeroed, tiny_batch), rtol=0, atol=1e-5)

    tiny_bert.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["intermediate_sizes"] == [32, 64, 64, 3]
    with pytest.raises(RuntimeError, match="size mismatch"):
        BertForSequenceClassification.from_pretrained(tmp_path)  # why from_pretrained_pruned exists
    for cls in (BertForSequenceClassification, AutoModelForSequenceClassification):
        reloaded = from_pretrained_pruned(cls, tmp_path)
        assert ffn_linears(encoder_layers(reloaded)[3])[0].out_features == 3
        torch.testing.assert_close(logits(reloaded, tiny_batch), logits(tiny_bert, tiny_batch),
                                   rtol=0, atol=0)


@pytest.mark.parametrize(
    ("keep", "match"),
    [({0: []}, "at least one"), ({0: [64]}, "out of range"), ({0: [1, 1]}, "duplicate"),
     ({9: [0]}, "layer 9")],
)
def test_prune_ffn_rejects_bad_indices(
    tiny_bert: BertForSequenceClassification, keep: dict[int, list[int]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        prune_ffn(tiny_bert, keep)


def test_select_ffn_to_keep_scopes() -> None:
    scores = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.1, 0.2, 5.0, 6.0])]
    per_layer = select_ffn_to_keep(scores, 4, "per_layer")
    assert {i: v.tolist() for i, v in per_layer.items()} == {0: [2, 3], 1: [2, 3]}
    global_ = select_ffn_to_keep(scores, 3, "global")
    assert {i: v.tolist() for i, v in global_.items()} == {0: [1, 2, 3], 1: [2, 3]}
    with pytest.raises(ValueError, match="per_layer, global"):
        select_ffn_to_keep(scores, 1, "both")


# ---------------------------------------------------------------- combined


def test_heads_ffn_and_layers_combined_reload(tiny_batch: Batch, tmp_path: Path) -> None:
    model = make_tiny_bert(num_layers=5, seed=3)
    prune_heads(model, {0: [0], 2: [1, 2], 4: [3]})
    prune_ffn(model, {1: torch.arange(16), 2: torch.arange(40), 4: torch.arange(8)})
    drop_layers(model, [1, 3])
    assert model.config.pruned_heads == {0: [0], 1: [1, 2], 2: [3]}
    assert model.config.intermediate_sizes == [64, 40, 8]

    model.save_pretrained(tmp_path)
    reloaded = from_pretrained_pruned(BertForSequenceClassification, tmp_path)

    assert reloaded.config.num_hidden_layers == 3
    assert count_encoder_parameters(reloaded) == count_encoder_parameters(model)
    torch.testing.assert_close(logits(reloaded, tiny_batch), logits(model, tiny_batch), rtol=0, atol=0)


# ---------------------------------------------------------------- gradual pruning


def test_gradual_pruner_follows_the_cubic_curve_and_reaches_the_target(tiny_batch: Batch) -> None:
    model = make_tiny_bert(seed=5).train()
    pruner = GradualPruner(
        model, start_step=2, end_step=10, head_sparsity=0.5, ffn_sparsity=0.75,
        batches=lambda: [tiny_batch], ffn_method="gradient",
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    history = []
    for step in range(13):
        if pruner.step(step):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)  # old tensors are gone
        optimizer.zero_grad()
        model(**tiny_batch).loss.backward()
        optimizer.step()
        history.append(pruner.sparsity())

    for step, (heads, ffn) in enumerate(history):
        assert heads == round(cubic_sparsity(step, 8, 0.0, 0.5, start_step=2) * 16) / 16
        # FFN cuts are rounded per layer (4 layers of 64): within half a neuron per layer of the curve.
        assert abs(ffn * 256 - round(cubic_sparsity(step, 8, 0.0, 0.75, start_step=2) * 256)) <= 2
    assert history[1] == (0.0, 0.0)
    assert history[-1] == (0.5, 0.75)
    assert pruner.step(10) is False, "a repeated step prunes nothing"
    assert alive_heads(model).sum(dim=1).min() >= 1


def test_gradual_pruner_prunes_only_every_n_steps_and_at_the_end() -> None:
    model = make_tiny_bert(seed=6)
    pruner = GradualPruner(model, start_step=0, end_step=10, ffn_sparsity=0.5, prune_every=4)
    changed, ffn = [], []
    for step in range(13):
        if pruner.step(step):
            changed.append(step)
        ffn.append(pruner.sparsity()[1])
    # Step 0 targets 0; steps 4 and 8 prune 100 (25 per layer), then 127, rounded per layer to 28 more (7 per
    # layer); the end step targets 128, which step 8 already reached, so it prunes nothing.
    assert changed == [4, 8]
    assert ffn[4] == 100 / 256 and ffn[7] == 100 / 256 and ffn[8] == 128 / 256 and ffn[9] == 128 / 256
    assert ffn[-1] == 0.5


def test_gradual_pruner_finishes_when_the_loop_skips_the_end_step() -> None:
    model = make_tiny_bert(seed=7)
    pruner = GradualPruner(model, start_step=0, end_step=7, ffn_sparsity=0.25)
    for step in range(0, 12, 2):
        pruner.step(step)
    assert pruner.sparsity() == (0.0, 0.25)


def test_per_layer_ffn_selection_cuts_each_layer_its_share() -> None:
    scores = [torch.rand(4), torch.rand(100), torch.rand(2)]
    for count, cut in ((1, [0, 1, 0]), (7, [0, 7, 0]), (50, [2, 47, 1]), (103, [3, 97, 1]), (500, [3, 97, 1])):
        keep = select_ffn_to_keep(scores, count)
        assert [s.numel() - len(keep.get(i, s)) for i, s in enumerate(scores)] == cut  # one neuron always stays


def test_per_layer_ffn_pruning_keeps_equal_layers_equal_and_from_pretrained_reloads(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    scores = [torch.rand(64) for _ in range(4)]
    keep = select_ffn_to_keep(scores, 101)  # 25.25 per layer: an exact total would make one layer differ
    assert {len(v) for v in keep.values()} == {39}
    prune_ffn(tiny_bert, keep)
    assert tiny_bert.config.intermediate_size == 39 and not hasattr(tiny_bert.config, "intermediate_sizes")
    tiny_bert.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()  # no helper needed
    torch.testing.assert_close(logits(reloaded, tiny_batch), logits(tiny_bert, tiny_batch), rtol=0, atol=0)


def test_widths_that_become_equal_again_drop_the_per_layer_list(tiny_bert: BertForSequenceClassification) -> None:
    prune_ffn(tiny_bert, {1: torch.arange(10)})
    assert tiny_bert.config.intermediate_sizes == [64, 10, 64, 64]
    drop_layers(tiny_bert, [1])
    assert tiny_bert.config.intermediate_size == 64 and not hasattr(tiny_bert.config, "intermediate_sizes")


def test_gradual_pruner_validates_arguments(tiny_bert: BertForSequenceClassification) -> None:
    with pytest.raises(ValueError, match="batches"):
        GradualPruner(tiny_bert, start_step=0, end_step=10, head_sparsity=0.3)
    with pytest.raises(ValueError, match="ffn_sparsity"):
        GradualPruner(tiny_bert, start_step=0, end_step=10, ffn_sparsity=1.0)
