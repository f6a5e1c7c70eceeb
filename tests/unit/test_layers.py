"""Physical layer dropping: structure, equivalence with skipping the layer, and save/reload."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, PreTrainedModel

from slimbert.compression.heads import count_encoder_parameters, prune_ffn, prune_heads
from slimbert.compression.layers import drop_layers
from slimbert.runtime.shapes import encoder_layers, from_pretrained_pruned

Batch = dict[str, torch.Tensor]


def logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out


def run_layers_by_hand(model: BertForSequenceClassification, batch: Batch, keep: list[int]) -> torch.Tensor:
    """Embeddings, then only the ``keep`` layers of the unmodified model, then pooler and classifier."""
    bert = model.bert
    mask = bert.get_extended_attention_mask(batch["attention_mask"], batch["input_ids"].shape)
    with torch.no_grad():
        hidden = bert.embeddings(input_ids=batch["input_ids"])
        for i in keep:
            hidden = bert.encoder.layer[i](hidden, attention_mask=mask)[0]
        out: torch.Tensor = model.classifier(bert.pooler(hidden))
    return out


def test_drop_layer_removes_it_and_matches_running_the_rest_by_hand(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch
) -> None:
    reference = copy.deepcopy(tiny_bert)
    params_before = count_encoder_parameters(tiny_bert)
    one_layer = sum(p.numel() for p in tiny_bert.bert.encoder.layer[1].parameters())

    returned = drop_layers(tiny_bert, [1])

    assert returned is tiny_bert
    assert tiny_bert.config.num_hidden_layers == 3
    assert len(encoder_layers(tiny_bert)) == 3
    assert count_encoder_parameters(tiny_bert) == params_before - one_layer
    expected = run_layers_by_hand(reference, tiny_batch, keep=[0, 2, 3])
    torch.testing.assert_close(logits(tiny_bert, tiny_batch), expected, rtol=0, atol=1e-5)
    # And it really differs from the full model, so the comparison above means something.
    assert not torch.allclose(logits(reference, tiny_batch), expected, atol=1e-4)


def test_layer_idx_renumbered(tiny_bert: BertForSequenceClassification) -> None:
    drop_layers(tiny_bert, [0, 2])
    indices = [layer.attention.self.layer_idx for layer in tiny_bert.bert.encoder.layer]
    assert indices == [0, 1]


def test_dropped_model_reloads_with_identical_logits(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    drop_layers(tiny_bert, [3, 0])
    tiny_bert.save_pretrained(tmp_path)

    plain = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    pruned_loader = from_pretrained_pruned(AutoModelForSequenceClassification, tmp_path)

    for reloaded in (plain, pruned_loader):
        assert reloaded.config.num_hidden_layers == 2
        assert len(encoder_layers(reloaded)) == 2
        torch.testing.assert_close(logits(reloaded, tiny_batch), logits(tiny_bert, tiny_batch),
                                   rtol=0, atol=0)


def test_pruned_heads_are_renumbered_and_reload(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    prune_heads(tiny_bert, {0: [1], 1: [2], 2: [0, 3], 3: [2]})
    drop_layers(tiny_bert, [1])

    assert tiny_bert.config.pruned_heads == {0: [1], 1: [0, 3], 2: [2]}
    tiny_bert.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    heads = [layer.attention.self.num_attention_heads for layer in reloaded.bert.encoder.layer]
    assert heads == [3, 2, 3]
    torch.testing.assert_close(logits(reloaded, tiny_batch), logits(tiny_bert, tiny_batch), rtol=0, atol=0)


def test_intermediate_sizes_follow_the_layers(tiny_bert: BertForSequenceClassification) -> None:
    prune_ffn(tiny_bert, {0: torch.arange(10), 2: torch.arange(20)})
    drop_layers(tiny_bert, [0])
    assert tiny_bert.config.intermediate_sizes == [64, 20, 64]


@pytest.mark.parametrize(
    ("indices", "match"),
    [([4], "out of range"), ([-1], "out of range"), ([0, 1, 2, 3], "all 4"), ([1, 1], "duplicate")],
)
def test_rejects_bad_indices(
    tiny_bert: BertForSequenceClassification, indices: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        drop_layers(tiny_bert, indices)
    assert tiny_bert.config.num_hidden_layers == 4
    assert len(tiny_bert.bert.encoder.layer) == 4


def test_dropping_nothing_is_a_no_op(tiny_bert: BertForSequenceClassification) -> None:
    drop_layers(tiny_bert, [])
    assert len(tiny_bert.bert.encoder.layer) == 4


def test_a_job_can_start_from_an_ffn_pruned_variant(
    tiny_bert: BertForSequenceClassification, tiny_batch: Batch, tmp_path: Path
) -> None:
    """Plain from_pretrained cannot rebuild per-layer FFN widths; load_classifier (a job's load stage) can."""
    from slimbert.data import SST2_LABELS
    from slimbert.models import load_classifier

    prune_ffn(tiny_bert, {0: torch.arange(10), 2: torch.arange(20)})
    tiny_bert.save_pretrained(tmp_path / "pruned")
    with pytest.raises(RuntimeError, match="size mismatch"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    loaded = load_classifier(str(tmp_path / "pruned"), SST2_LABELS)
    torch.testing.assert_close(logits(loaded, tiny_batch), logits(tiny_bert, tiny_batch), rtol=0, atol=0)

    tiny_bert.config.id2label = {0: "no", 1: "yes"}  # another task's head: pruned weights are not re-headed
    tiny_bert.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="FFN-pruned but is not a classifier"):
        load_classifier(str(tmp_path / "other"), SST2_LABELS)
