"""Training runs on the device the model was placed on; on a CPU nothing changes (fp32, no autocast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification, PreTrainedTokenizerBase

from slimbert.compression.finetune import Amp, FinetuneConfig, finetune
from slimbert.data import TextDataset

TEXTS = ["a fine film .", "dull and boring .", "moving , superb work .", "weak ."] * 4
DATA = TextDataset(TEXTS, [1, 0, 1, 0] * 4, "fixture")
CFG = FinetuneConfig(epochs=1, batch_size=4, max_length=16, learning_rate=1e-3)


def _tiny(path: Path) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase]:
    return BertForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_on_cpu_training_is_plain_fp32(tiny_model_dir: Path) -> None:
    model, tokenizer = _tiny(tiny_model_dir)
    amp = Amp.for_model(model)
    assert amp.dtype is None and amp.scaler is None
    finetune(model, tokenizer, DATA, DATA, CFG)
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_model_trains_there_with_mixed_precision(tiny_model_dir: Path) -> None:
    model, tokenizer = _tiny(tiny_model_dir)
    model.to("cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    amp = Amp.for_model(model)
    assert amp.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    result = finetune(model, tokenizer, DATA, DATA, CFG)
    assert result.steps == 4 and next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32  # autocast: the master weights stay fp32
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it trained
