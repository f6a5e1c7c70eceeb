"""Tiny random checkpoints of every encoder family SlimBERT compresses, each with a real tokenizer built offline.

BERT, DistilBERT and ELECTRA get a WordPiece vocabulary file; RoBERTa a byte-level BPE (vocab.json +
merges.txt) trained on a few sentences; DeBERTa-v2 a Unigram model saved as a fast tokenizer (tokenizer.json:
the ``sentencepiece`` package is not installed, and DeBERTa-v2's fast tokenizer needs no .model file). Every
model is a 2-label classifier skeleton of hidden 64 (bitsandbytes' CPU 4-bit kernel packs 64 input features),
4 heads, 3 layers unless told, saved with ``save_pretrained`` so the job loads it like any local checkpoint.
Shared by tests/unit/test_architectures.py, tests/integration/test_architectures.py and
benchmarks/architecture_matrix.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertTokenizerFast,
    DebertaV2TokenizerFast,
    DistilBertTokenizerFast,
    ElectraTokenizerFast,
    PreTrainedTokenizerBase,
    RobertaTokenizerFast,
)

from tests.unit.test_pipeline import write_tiny_sst2

__all__ = ["ARCHITECTURES", "build_tokenizer", "describe", "save_tiny", "tiny_config", "write_tiny_sst2"]

ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "deberta-v2")

WORDS = ["the", "film", "is", "and", "cast", "plot", "score", "a", "movie", "but", "truly", ".", ",",
         "great", "wonderful", "moving", "brilliant", "charming", "funny", "gorgeous", "witty",
         "awful", "boring", "dull", "terrible", "clumsy", "tedious", "nothing", "boilerplate"]
# Corpus for the trained tokenizers (BPE, Unigram): every word above in a few sentence shapes.
CORPUS = [f"the film is {w} and the plot is {w} ." for w in WORDS] + [" ".join(WORDS)] * 4
LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


def _wordpiece(path: Path, cls: Any) -> PreTrainedTokenizerBase:
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer: PreTrainedTokenizerBase = cls(vocab_file=str(vocab), model_max_length=128)
    return tokenizer


def _roberta(path: Path) -> PreTrainedTokenizerBase:
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    raw = path / "bpe"
    raw.mkdir()
    bpe.model.save(str(raw))  # vocab.json + merges.txt, what RobertaTokenizer(Fast) reads
    tokenizer: PreTrainedTokenizerBase = RobertaTokenizerFast(
        vocab_file=str(raw / "vocab.json"), merges_file=str(raw / "merges.txt"), model_max_length=128)
    return tokenizer


def _deberta_v2(path: Path) -> PreTrainedTokenizerBase:
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.Sequence([normalizers.Lowercase()])
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, special_tokens=specials,
                                                                unk_token="[UNK]"))
    cls_id, sep_id = unigram.token_to_id("[CLS]"), unigram.token_to_id("[SEP]")
    unigram.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    file = path / "unigram.json"
    unigram.save(str(file))
    tokenizer: PreTrainedTokenizerBase = DebertaV2TokenizerFast(
        tokenizer_file=str(file), model_max_length=128, bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]",
        sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    return tokenizer


def build_tokenizer(arch: str, path: Path) -> PreTrainedTokenizerBase:
    """A real tokenizer of ``arch``'s kind, built from files written under ``path`` (nothing downloaded)."""
    path.mkdir(parents=True, exist_ok=True)
    if arch == "bert":
        return _wordpiece(path, BertTokenizerFast)
    if arch == "distilbert":
        return _wordpiece(path, DistilBertTokenizerFast)
    if arch == "electra":
        return _wordpiece(path, ElectraTokenizerFast)
    if arch == "roberta":
        return _roberta(path)
    if arch == "deberta-v2":
        return _deberta_v2(path)
    raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}")


def tiny_config(arch: str, vocab_size: int, pad_id: int, *, hidden: int = 64, layers: int = 3) -> Any:
    """A random 2-label config of ``arch``: ``hidden`` wide, 4 heads, ``layers`` deep, FFN 2x hidden.

    130 positions: jobs tokenize to 128 tokens, and RoBERTa's positions start after the padding index.
    """
    common: dict[str, Any] = {"vocab_size": vocab_size, "pad_token_id": pad_id, "num_labels": 2, **LABELS}
    if arch == "distilbert":
        return AutoConfig.for_model("distilbert", dim=hidden, n_layers=layers, n_heads=4, hidden_dim=2 * hidden,
                                    max_position_embeddings=130, **common)
    sizes = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
             "intermediate_size": 2 * hidden, "max_position_embeddings": 130, **common}
    if arch == "electra":
        sizes["embedding_size"] = hidden // 2  # ELECTRA's factorised embeddings: the projection must survive
    if arch == "deberta-v2":
        # DeBERTa-v3's settings: relative attention with shared keys, no absolute positions, no token types.
        sizes.update(relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                     max_relative_positions=-1, position_buckets=32, share_att_key=True, norm_rel_ebd="layer_norm",
                     type_vocab_size=0)
    if arch == "roberta":
        sizes.update(type_vocab_size=1, bos_token_id=0, eos_token_id=2)
    return AutoConfig.for_model(arch, **sizes)


def save_tiny(arch: str, path: Path, *, hidden: int = 64, layers: int = 3, seed: int = 0, head: bool = True) -> Path:
    """Save a random ``arch`` classifier (``head=False``: the bare encoder, like a pretrained checkpoint that
    still needs fine-tuning) and its tokenizer into ``path``; returns ``path``."""
    tokenizer = build_tokenizer(arch, path / "_tokenizer_src")
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    assert isinstance(pad, int)
    config = tiny_config(arch, len(tokenizer), pad, hidden=hidden, layers=layers)
    (AutoModelForSequenceClassification if head else AutoModel).from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    # The source files were copied by save_pretrained (or folded into tokenizer.json); keep the folder clean.
    for f in sorted((path / "_tokenizer_src").rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (path / "_tokenizer_src").rmdir()
    return path


def describe(path: Path) -> dict[str, Any]:
    """The model type and tokenizer class saved at ``path`` (what a table of architectures shows)."""
    config = json.loads((path / "config.json").read_text())
    tok = json.loads((path / "tokenizer_config.json").read_text())
    return {"model_type": config["model_type"], "tokenizer": tok.get("tokenizer_class")}
