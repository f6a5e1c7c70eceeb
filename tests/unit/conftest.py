"""Fixtures shared by unit tests: tiny random BERTs built from a config, never downloaded."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification


def make_tiny_bert(num_layers: int = 4, seed: int = 0) -> BertForSequenceClassification:
    """A random 2-label BERT small enough for unit tests to run in milliseconds."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def tiny_bert() -> BertForSequenceClassification:
    return make_tiny_bert()


@pytest.fixture
def tiny_batch() -> dict[str, torch.Tensor]:
    """A fixed batch of token ids with padding in the second row, plus labels."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 128, (4, 16), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 10:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 1, 1, 0])}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy machine the pool's spinning costs seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
