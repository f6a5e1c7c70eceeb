"""The compression pipeline's pieces on tiny models, with a tmp_path store and a tiny SST-2-shaped dataset."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

from slimbert.compression.distill import distillation_loss_fn
from slimbert.compression.finetune import finetune
from slimbert.compression.heads import alive_heads
from slimbert.compression.precision_steps import PrecisionStep, cannot_run
from slimbert.compression.presets import build_recipe
from slimbert.compression.recipe import Distillation, HeadFfnPruning, Recipe, TrainConfig
from slimbert.compression.schedules import cubic_sparsity
from slimbert.compression.structure import train_with_pruner
from slimbert.config import Settings
from slimbert.data import read_tsv
from slimbert.errors import JobCancelled, StageSkipped
from slimbert.hardware import cpu_supports_bf16
from slimbert.jobs import JobRecord, JobStore
from slimbert.orchestrate.compress import run_compress
from slimbert.orchestrate.reporter import JobReporter
from slimbert.runtime.shapes import from_pretrained_pruned
from slimbert.store.store import VariantStore

POSITIVE = ["great", "wonderful", "moving", "brilliant", "charming", "funny"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious"]
FILLER = ["the", "film", "is", "and", "cast", "plot", "score", "."]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tokenizer(path: Path) -> BertTokenizerFast:
    """A WordPiece tokenizer over the tiny dataset's words: keeps the embeddings (and ONNX files) small."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + FILLER + POSITIVE + NEGATIVE) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)
    tokenizer.save_pretrained(path)
    return tokenizer


def tiny_config(vocab_size: int, hidden: int = 64, layers: int = 3) -> BertConfig:
    # Hidden 64: bitsandbytes' CPU 4-bit kernel packs weights in blocks of 64 input features.
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )


def save_tiny_model(path: Path, *, hidden: int = 64, layers: int = 3, head: bool = True, seed: int = 0) -> Path:
    """A random BERT (classifier, or bare encoder with ``head=False``) with the tiny tokenizer."""
    tokenizer = save_tokenizer(path)
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), hidden, layers)
    (BertForSequenceClassification(config) if head else BertModel(config)).save_pretrained(path)
    return path


def write_tiny_sst2(directory: Path, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> Path:
    """train.tsv and dev.tsv in GLUE's format: templated sentences whose sentiment words set the label."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            words = POSITIVE if i % 2 else NEGATIVE
            rows.append(f"the film is {rng.choice(words)} and the {rng.choice(['cast', 'plot', 'score'])} is "
                        f"{rng.choice(words)} .\t{i % 2}")
        (directory / name).write_text("\n".join(rows) + "\n")
    return directory


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sst2(tmp_path_factory.mktemp("sst2"))


@pytest.fixture(scope="module")
def encoder64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("encoder64"), head=False)


def settings_for(tmp_path: Path, sst2_dir: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", sst2_dir=sst2_dir, allowed_model_roots=[Path("/tmp"), tmp_path],
                    _env_file=None)  # type: ignore[call-arg]


def run_job(settings: Settings, recipe: Recipe, job_id: str = "job1") -> tuple[dict[str, Any], JobRecord]:
    jobs = JobStore(settings.job_dir)
    jobs.save(JobRecord(id=job_id, request={"recipe": recipe.model_dump(mode="json")}))
    results = run_compress(settings, job_id, recipe, queue="cpu", worker="unit")
    return results, jobs.get(job_id)


def test_tiny_preset_keeps_the_quick_names(tmp_path: Path, sst2_dir: Path, encoder64: Path) -> None:
    settings = settings_for(tmp_path, sst2_dir)
    recipe = build_recipe("tiny", {"base_model": str(encoder64), "family": "unit"})
    results, job = run_job(settings, recipe)
    assert set(results["variants"]) == {"baseline-fp32", "pruned-fp32", "pruned-int8"}
    names = [(s.name, s.state) for s in job.stages]
    assert names == [("load", "done"), ("finetune", "done"), ("evaluate-baseline", "done"),
                     ("sensitivity", "skipped"), ("prune-layers", "done"), ("prune-heads-ffn", "skipped"),
                     ("int8-dynamic:pruned-int8", "done")]
    store = VariantStore(settings.store_dir)
    int8 = store.manifest("unit", "pruned-int8")
    assert int8.runtime == "onnxruntime" and int8.parent == "pruned-fp32" and int8.technique.name == "int8-dynamic"
    for manifest in store.manifests("unit"):
        assert Recipe.model_validate(manifest.recipe) == recipe  # enough to rebuild the variant
        assert manifest.test_accuracy == results["variants"][manifest.variant]["test_accuracy"]


def test_every_stage_on_a_tiny_model(tmp_path: Path, sst2_dir: Path, encoder64: Path) -> None:
    settings = settings_for(tmp_path, sst2_dir)
    recipe = build_recipe("every-stage-tiny", {"base_model": str(encoder64), "family": "every"})
    results, job = run_job(settings, recipe)
    states = {s.name: s.state for s in job.stages}
    assert {s.device for s in job.stages} == {"cpu"}  # a CPU job names the CPU for every stage
    for stage in ("finetune", "sensitivity", "prune-layers", "prune-heads-ffn", "int8-dynamic:pruned-int8",
                  "int8-static:pruned-int8-static", "int8-qat:pruned-int8-qat", "int8-mixed:pruned-int8-mixed",
                  "int8-mixed:heads-int8-mixed", "int4-nf4:pruned-int4", "int8-dynamic:heads-int8",
                  "int4-nf4:heads-int4"):
        assert states[stage] == "done", (stage, job.stages)
    # bf16 runs where the CPU has native bf16 math, and is skipped with the reason elsewhere.
    if cpu_supports_bf16():
        assert states["fp16-bf16:pruned-bf16"] == "done"
    else:
        assert states["fp16-bf16:pruned-bf16"] == "skipped" and "bf16" in results["skipped"]["pruned-bf16"]
    assert len(results["sensitivity"]) == 3

    store = VariantStore(settings.store_dir)
    m = {x.variant: x for x in store.manifests("every")}
    assert m["pruned-fp32"].technique.params["distilled"] is True
    assert m["pruned-fp32"].extra["sensitivity"] == results["sensitivity"]
    assert m["pruned-int8"].extra["sensitivity"] == results["sensitivity"]  # inherited from its parent
    heads = m["heads-fp32"]
    assert heads.parent == "pruned-fp32" and heads.technique.name == "head-ffn-pruning"
    params = heads.technique.params
    assert params["encoder_parameters_after"] < 0.7 * params["encoder_parameters_before"]
    assert m["heads-int8"].technique.params["optimize_skipped"]  # ragged heads: no attention fusion
    assert m["pruned-int8"].technique.params["optimize"] is True
    assert (m["pruned-int4"].runtime, m["pruned-int4"].precision) == ("bitsandbytes", "int4")
    assert m["heads-int4"].technique.params["storage"] == "nf4"  # per-layer FFN widths, stored 4-bit
    if cpu_supports_bf16():
        assert (m["pruned-bf16"].runtime, m["pruned-bf16"].precision) == ("torch", "bf16")
    assert m["pruned-int8-qat"].technique.params["qat"] is True
    mixed = m["pruned-int8-mixed"].technique.params  # 2 layers after the cut: one measured most sensitive stays fp32
    assert [s["layer"] for s in mixed["layer_int8_sensitivity"]] == [0, 1] and len(mixed["fp32_layers"]) == 1
    reloaded = from_pretrained_pruned(BertForSequenceClassification, store.variant_dir("every", "heads-fp32"))
    widths = heads.technique.params["after"]["ffn_widths"]
    assert [layer.intermediate.dense.out_features for layer in reloaded.bert.encoder.layer] == widths
    # per_layer FFN pruning keeps the layers' widths equal, so plain from_pretrained reloads the variant
    assert len(set(widths)) == 1 and reloaded.config.intermediate_size == widths[0]
    BertForSequenceClassification.from_pretrained(store.variant_dir("every", "heads-fp32"))
    for name, manifest in m.items():
        assert manifest.test_accuracy is not None and manifest.test_examples == 32, name
        assert manifest.validation_accuracy is not None and manifest.validation_examples == 32, name


def test_target_layers_with_distillation(tmp_path: Path, sst2_dir: Path, encoder64: Path) -> None:
    settings = settings_for(tmp_path, sst2_dir)
    recipe = build_recipe("tiny", {"base_model": str(encoder64), "family": "depth", "precision": None,
                                   "layer_pruning": {"target_layers": 1, "distill": {}}})
    results, job = run_job(settings, recipe)
    manifest = VariantStore(settings.store_dir).manifest("depth", "pruned-fp32")
    assert manifest.num_layers == 1 and manifest.technique.params["dropped_layers"] == [1, 2]
    assert manifest.technique.params["distill"]["temperature"] == {"start": 10.0, "end": 2.0}
    assert set(results["variants"]) == {"baseline-fp32", "pruned-fp32"}


def test_impossible_depth_fails_with_a_message(tmp_path: Path, sst2_dir: Path, encoder64: Path) -> None:
    settings = settings_for(tmp_path, sst2_dir)
    recipe = build_recipe("tiny", {"base_model": str(encoder64), "family": "deep", "layer_pruning": {"drop": 3}})
    with pytest.raises(ValueError, match="drop between 1 and 2"):
        run_job(settings, recipe)


def test_distillation_leaves_the_teacher_untouched(tmp_path: Path, sst2_dir: Path) -> None:
    tokenizer = save_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(len(tokenizer)))
    student = BertForSequenceClassification(tiny_config(len(tokenizer), layers=1))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train, dev = read_tsv(sst2_dir / "train.tsv"), read_tsv(sst2_dir / "dev.tsv")
    cfg = TrainConfig(epochs=1, batch_size=16, max_length=32)
    seen: list[float] = []
    loss_fn = distillation_loss_fn(teacher, Distillation().schedule())

    def spy(model: Any, batch: dict[str, torch.Tensor], step: int, total: int) -> torch.Tensor:
        loss = loss_fn(model, batch, step, total)
        seen.append(float(loss))
        return loss

    finetune(student, tokenizer, train, dev, cfg, loss_fn=spy)
    assert len(seen) == 4 and all(torch.isfinite(torch.tensor(seen)))
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_train_with_pruner_follows_the_cubic_schedule(tmp_path: Path, sst2_dir: Path) -> None:
    tokenizer = save_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(len(tokenizer), layers=2))
    train = read_tsv(sst2_dir / "train.tsv")
    cfg = HeadFfnPruning(head_sparsity=0.25, ffn_sparsity=0.5, ffn_method="gradient", importance_batches=1,
                         schedule={"start": 0.0, "end": 0.75, "prune_every": 1},  # type: ignore[arg-type]
                         train=TrainConfig(epochs=2, batch_size=16, max_length=32))
    run = train_with_pruner(model, tokenizer, train, cfg)
    assert (run["steps"], run["start_step"], run["end_step"]) == (8, 0, 6)
    assert (run["head_sparsity"], run["ffn_sparsity"]) == (0.25, 0.5)
    for event in run["pruning_events"]:
        expected = round(cubic_sparsity(event["step"], 6, 0.0, 0.5) * 256) / 256
        # FFN cuts are rounded per layer (2 layers of 128): within half a neuron per layer of the curve.
        assert event["ffn_sparsity"] == pytest.approx(expected, abs=1 / 256 + 1e-4)
    params = [e["encoder_parameters"] for e in run["pruning_events"]]
    assert params == sorted(params, reverse=True) and len(params) >= 2
    assert int(alive_heads(model).sum()) == 6
    # Training went on after the last pruning event (step 6 of 8): the rebuilt optimizer holds the new tensors.
    assert run["last_loss"] is not None and torch.isfinite(torch.tensor(run["last_loss"]))
    model.save_pretrained(tmp_path / "pruned")
    reloaded = from_pretrained_pruned(BertForSequenceClassification, tmp_path / "pruned")
    batch = tokenizer(["the film is great ."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits)


def test_optional_stage_records_a_skip_and_the_job_goes_on(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    jobs.save(JobRecord(id="j1"))
    rep = JobReporter(jobs, "j1", {"a": 1, "b": 1, "c": 1}, "cpu", "w")
    with rep.optional_stage("a"):
        raise RuntimeError("ORT said no")
    with rep.optional_stage("b"):
        raise StageSkipped("cannot run here")
    rep.skip("c", "disabled")
    stages = jobs.get("j1").stages
    assert [(s.name, s.state) for s in stages] == [("a", "skipped"), ("b", "skipped"), ("c", "skipped")]
    assert "RuntimeError: ORT said no" in stages[0].detail["reason"] and stages[1].detail["reason"] == "cannot run here"
    assert jobs.get("j1").progress == 100.0
    with pytest.raises(JobCancelled), rep.optional_stage("d"):
        raise JobCancelled("stop")
    assert jobs.get("j1").stages[-1].state == "failed"


def test_cannot_run_explains_why(tiny_model_dir: Path) -> None:
    recipe = build_recipe("tiny")
    fp16 = cannot_run(recipe, PrecisionStep("fp16-bf16", "baseline-fp32", "baseline-fp16"), tiny_model_dir, "cpu")
    assert fp16 is not None and "GPU" in fp16
    assert cannot_run(recipe, PrecisionStep("int8-dynamic", "baseline-fp32", "baseline-int8"), tiny_model_dir,
                      "cpu") is None
