"""Every compression transform on a tiny random model of each encoder family, with its real tokenizer.

BERT (MiniLM is a BERT), RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2 (tests/tiny_archs.py builds them
offline). Structural transforms must reload from disk to the very logits they had in memory; precision
steps either build a variant that loads through ``load_variant`` and tracks the fp32 logits, or say why not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from slimbert.benchmark.flops import computed_gflops
from slimbert.compression.heads import (
    _head_mask_target,
    _mask_heads,
    alive_heads,
    count_encoder_parameters,
    ffn_importance,
    head_importance,
    prune_ffn,
    prune_heads,
)
from slimbert.compression.inductor_int8 import quantize_inductor_int8
from slimbert.compression.layers import drop_layers
from slimbert.compression.precision_steps import build_precision, cannot_run, planned_precision
from slimbert.compression.presets import build_recipe
from slimbert.data import read_tsv
from slimbert.hardware import cpu_supports_bf16
from slimbert.inference.loader import load_variant
from slimbert.records import HEADS
from slimbert.runtime.inductor import PROGRAM_FILE
from slimbert.runtime.shapes import encoder_layers, ffn_widths, from_pretrained_pruned, from_pretrained_rebuilds
from slimbert.store.manifest import Technique, VariantManifest
from tests.tiny_archs import ARCHITECTURES, save_tiny, write_tiny_sst2

TEXTS = ["the film is great and the cast is charming .", "a dull , tedious movie", "boring"]
PAIRS = {"distilbert": False, "roberta": False}  # tokenizers that send no token_type_ids


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    arch = str(request.param)
    return arch, save_tiny(arch, tmp_path_factory.mktemp(arch.replace("-", "")), layers=3)


def _load(path: Path) -> PreTrainedModel:
    return from_pretrained_pruned(AutoModelForSequenceClassification, path)


def _logits(model: PreTrainedModel, path: Path) -> torch.Tensor:
    enc = AutoTokenizer.from_pretrained(path)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**enc).logits


def test_tokenizers_send_what_each_architecture_takes(arch_dir: tuple[str, Path]) -> None:
    arch, path = arch_dir
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(TEXTS)
    assert ("token_type_ids" in enc) is PAIRS.get(arch, True)
    # Real tokens between the specials, none unknown.
    assert all(len(ids) >= 3 and tokenizer.unk_token_id not in ids for ids in enc["input_ids"])


def test_drop_layers_reloads_with_the_same_logits(arch_dir: tuple[str, Path], tmp_path: Path) -> None:
    _arch, path = arch_dir
    model = _load(path)
    drop_layers(model, [1])
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path)
    reloaded = _load(tmp_path)
    assert len(encoder_layers(reloaded)) == reloaded.config.num_hidden_layers == 2
    torch.testing.assert_close(_logits(reloaded, tmp_path), _logits(model, tmp_path))
    # A dropped layer leaves nothing architecture-specific behind: plain from_pretrained agrees.
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(plain, tmp_path), _logits(model, tmp_path))


def test_pruning_heads_equals_masking_them(arch_dir: tuple[str, Path]) -> None:
    _arch, path = arch_dir
    # Mask the heads in an unpruned copy through the hook head importance uses (in eager attention, as it runs).
    model = _load(path)
    masked = from_pretrained_pruned(AutoModelForSequenceClassification, path, attn_implementation="eager")
    handles = [_mask_heads(_head_mask_target(layer), torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 4, 1, 1))
               for layer in encoder_layers(masked)[:1]]
    expected = _logits(masked, path)
    for h in handles:
        h.remove()
    prune_heads(model, {0: [1]})
    torch.testing.assert_close(_logits(model, path), expected)


def test_heads_and_ffn_pruning_reload_through_the_store_loader(arch_dir: tuple[str, Path], tmp_path: Path) -> None:
    arch, path = arch_dir
    model = _load(path)
    before = count_encoder_parameters(model)
    enc = AutoTokenizer.from_pretrained(path)(TEXTS, padding=True, return_tensors="pt")
    batches = [{**enc, "labels": torch.tensor([1, 0, 0])}]
    scores = head_importance(model, batches)
    assert scores.shape == (3, 4) and torch.isfinite(scores).all() and (scores > 0).all()
    assert all(s.shape == (128,) for s in ffn_importance(model, "gradient", batches))
    prune_heads(model, {0: [1], 2: [0, 3]})
    prune_ffn(model, {0: torch.arange(0, 128, 2), 1: torch.arange(100)})  # per-layer widths 64, 100, 128
    assert count_encoder_parameters(model) < before
    assert alive_heads(model).sum(dim=1).tolist() == [3, 4, 2] and ffn_widths(model) == [64, 100, 128]
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path)
    assert not from_pretrained_rebuilds(model.config)

    manifest = VariantManifest(family="arch", variant=HEADS, runtime="torch", precision="fp32", base_model_id=arch,
                               technique=Technique(name="test"), labels={0: "negative", 1: "positive"},
                               num_parameters=model.num_parameters())
    predictor = load_variant(manifest, tmp_path)
    out = predictor.predict(TEXTS)
    torch.testing.assert_close(torch.as_tensor(out.logits), _logits(model, tmp_path))
    reloaded = _load(tmp_path)
    assert alive_heads(reloaded).sum(dim=1).tolist() == [3, 4, 2] and ffn_widths(reloaded) == [64, 100, 128]
    # FLOPs follow the pruned shapes whatever the config's names (DistilBERT: dim, n_heads, hidden_dim).
    assert computed_gflops(reloaded.config, 16) < computed_gflops(_load(path).config, 16)


@pytest.fixture(scope="module")
def sst2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sst2(tmp_path_factory.mktemp("sst2"))


def test_precision_steps_build_or_say_why(arch_dir: tuple[str, Path], sst2: Path, tmp_path: Path) -> None:
    arch, path = arch_dir
    model = _load(path)
    prune_heads(model, {1: [2]})  # ragged heads: dynamic INT8 must leave attention unfused
    src = tmp_path / "heads-fp32"
    model.save_pretrained(src)
    AutoTokenizer.from_pretrained(path).save_pretrained(src)
    fp32 = _logits(model, src)
    recipe = build_recipe("every-stage-tiny", {"precision": {"targets": ["heads-fp32"], "int8_qat": None}})
    train = read_tsv(sst2 / "train.tsv")
    outcome: dict[str, str] = {}
    for step in planned_precision(recipe):
        reason = cannot_run(recipe, step, src, "cpu")
        if reason:
            outcome[step.method] = reason
            continue
        made, notes = build_precision(recipe, step, src, tmp_path / step.variant, AutoTokenizer.from_pretrained(src),
                                      train)
        manifest = VariantManifest(family="arch", variant=step.variant, runtime=made.runtime,
                                   precision=made.precision, base_model_id=arch, technique=Technique(name=step.method),
                                   labels={0: "negative", 1: "positive"}, num_parameters=1)
        logits = torch.as_tensor(load_variant(manifest, tmp_path / step.variant).predict(TEXTS).logits).float()
        # Random weights give logits of a few tenths: 8- and 4-bit variants stay within a few hundredths.
        torch.testing.assert_close(logits, fp32, atol=0.05, rtol=0.0)
        if step.method == "int8-dynamic":
            assert notes["optimize_skipped"]  # pruned heads
        outcome[step.method] = "done"
    expected = {"int8-dynamic", "int8-static", "int8-mixed", "int4-nf4", "fp16-bf16"}
    assert set(outcome) == expected
    assert (outcome["fp16-bf16"] == "done") is cpu_supports_bf16()
    if arch == "deberta-v2":
        assert "subgraphs" in outcome["int8-static"]
        assert {k for k, v in outcome.items() if v == "done"} >= {"int8-dynamic", "int8-mixed", "int4-nf4"}
    else:
        assert {k for k, v in outcome.items() if v == "done"} >= expected - {"fp16-bf16"}


def test_inductor_int8_quantizes_every_family(arch_dir: tuple[str, Path], tmp_path: Path) -> None:
    """torchao's quantizer also annotated RoBERTa's and DeBERTa-v2's integer position arithmetic, whose
    observers then failed ("histogram_cpu" not implemented for 'Int'); only float ops are quantized now."""
    arch, path = arch_dir
    made = quantize_inductor_int8(path, tmp_path / "int8", TEXTS * 3, max_length=32)
    program = torch.export.load(tmp_path / "int8" / PROGRAM_FILE)
    tensors = {**program.state_dict, **program.constants}
    int8 = [n for n, t in tensors.items() if isinstance(t, torch.Tensor) and t.dtype == torch.int8]
    assert len(int8) >= 3 * 6, f"{arch}: {len(int8)} int8 tensors"  # Q, K, V, output, FFN in and out per layer
    enc = AutoTokenizer.from_pretrained(path)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # the exported program run as it is (no compile): the quantized graph's own numbers
        logits = program.module()(**{k: enc[k] for k in made.params["inputs"]})
    torch.testing.assert_close(logits, _logits(_load(path), path), atol=0.05, rtol=0.0)
