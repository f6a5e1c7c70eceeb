"""``load_variant`` loads every runtime, and a batch gives what its items give one by one.

Dynamic padding means a batch pads short texts while a single text is not padded; the attention mask
must make that invisible. Tolerances are relative to the spread (max - min) of the batch's logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from slimbert.compression.heads import prune_ffn, prune_heads
from slimbert.compression.nf4 import quantize_nf4
from slimbert.compression.onnx_int8 import quantize_dynamic_int8
from slimbert.compression.precision import to_half
from slimbert.errors import SlimBertError
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.manifest import Technique, VariantManifest
from tests.unit.test_pipeline import save_tiny_model, save_tokenizer

TEXTS = [
    "the film is great .",
    "the plot is dull and the cast is awful and the score is tedious .",
    "charming",
    "the film is moving and funny and brilliant .",
    "boring",
]
# Observed: fp32 and NF4 (fp32 compute) ~1e-7; bf16 ~1%; ORT dynamic int8 a few % (activation ranges are
# per batch, so padding and the other rows move the quantization grid).
TOLERANCE = {"torch-fp32": 1e-4, "torch-ffn-pruned": 1e-4, "torch-bf16": 0.08, "onnxruntime-int8": 0.15,
             "bitsandbytes-int4": 1e-3}


def manifest(runtime: str, precision: str) -> VariantManifest:
    return VariantManifest(family="fam", variant="v", runtime=runtime, precision=precision,  # type: ignore[arg-type]
                           base_model_id="tiny", technique=Technique(name="test"),
                           labels={0: "negative", 1: "positive"}, num_parameters=1)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("fp32"), seed=3)


@pytest.fixture(scope="module")
def variants(fp32_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[VariantManifest, Path]]:
    out: dict[str, tuple[VariantManifest, Path]] = {"torch-fp32": (manifest("torch", "fp32"), fp32_dir)}

    pruned_dir = tmp_path_factory.mktemp("ffn-pruned")
    model = BertForSequenceClassification.from_pretrained(fp32_dir)
    prune_heads(model, {0: [1], 2: [0, 3]})
    prune_ffn(model, {0: torch.arange(0, 128, 2), 1: torch.arange(40)})
    model.save_pretrained(pruned_dir)
    save_tokenizer(pruned_dir)
    out["torch-ffn-pruned"] = (manifest("torch", "fp32"), pruned_dir)

    bf16_dir = tmp_path_factory.mktemp("bf16")
    to_half(fp32_dir, bf16_dir, "bf16")
    out["torch-bf16"] = (manifest("torch", "bf16"), bf16_dir)

    int8_dir = tmp_path_factory.mktemp("int8")
    quantize_dynamic_int8(fp32_dir, int8_dir)
    out["onnxruntime-int8"] = (manifest("onnxruntime", "int8"), int8_dir)

    nf4_dir = tmp_path_factory.mktemp("nf4")
    quantize_nf4(fp32_dir, nf4_dir, "fp32")
    out["bitsandbytes-int4"] = (manifest("bitsandbytes", "int4"), nf4_dir)
    return out


def batch_vs_items(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    batch = predictor.predict(TEXTS).logits.astype(np.float64)
    single = np.concatenate([predictor.predict([t]).logits for t in TEXTS]).astype(np.float64)
    return batch, single


@pytest.mark.parametrize("kind", sorted(TOLERANCE))
def test_every_runtime_loads_and_a_batch_equals_its_items(
    kind: str, variants: dict[str, tuple[VariantManifest, Path]]
) -> None:
    m, path = variants[kind]
    predictor = load_variant(m, path)
    assert predictor.runtime == m.runtime and predictor.device == "cpu"
    batch, single = batch_vs_items(predictor)
    assert batch.shape == (len(TEXTS), 2)
    spread = float(batch.max() - batch.min())
    assert spread > 0
    err = float(np.abs(batch - single).max())
    assert err <= TOLERANCE[kind] * spread, f"{kind}: batch vs items differ by {err:.3g} (spread {spread:.3g})"
    out = predictor.predict(TEXTS)
    assert [p.label_id for p in out.predictions] == batch.argmax(-1).tolist()
    for p in out.predictions:
        assert abs(sum(p.scores.values()) - 1) < 1e-6 and p.label in ("negative", "positive")


def test_torch_variants_keep_their_dtype_and_pruned_shapes(variants: dict[str, tuple[VariantManifest, Path]]
                                                           ) -> None:
    bf16 = load_variant(*variants["torch-bf16"])
    assert next(bf16.model.parameters()).dtype == torch.bfloat16  # type: ignore[attr-defined]
    pruned = load_variant(*variants["torch-ffn-pruned"])
    assert pruned.model.config.intermediate_sizes == [64, 40, 128]  # type: ignore[attr-defined]
    reference = BertForSequenceClassification.from_pretrained(variants["torch-fp32"][1])
    prune_heads(reference, {0: [1], 2: [0, 3]})
    prune_ffn(reference, {0: torch.arange(0, 128, 2), 1: torch.arange(40)})
    enc = pruned.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference.eval()(**enc).logits.numpy()
    np.testing.assert_allclose(pruned.predict(TEXTS).logits, expected, atol=1e-5)


def test_unknown_runtime_and_missing_cuda_say_what_is_supported(variants: dict[str, tuple[VariantManifest, Path]]
                                                                ) -> None:
    m, path = variants["torch-fp32"]
    with pytest.raises(SlimBertError, match="not a torch dtype"):
        load_variant(m.model_copy(update={"precision": "int8"}), path)
    if not torch.cuda.is_available():
        with pytest.raises(SlimBertError, match="CUDA"):
            load_variant(m, path, "gpu")
