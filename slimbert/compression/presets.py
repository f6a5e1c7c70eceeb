"""Named recipes: ``quick`` (the default), ``study``, ``study-1epoch``, ``max-cpu`` and the tiny test presets.

A preset is a partial recipe; ``build_recipe`` merges the caller's overrides into it and validates
the result, so every field of a job's recipe is resolved and typed before anything runs.
"""

from __future__ import annotations

from typing import Any

from slimbert.compression.recipe import Recipe
from slimbert.records import PresetName

_TINY_TRAIN = {"epochs": 1, "batch_size": 16, "max_length": 32}

PRESETS: dict[PresetName, dict[str, Any]] = {
    # The README's default job: embedded MiniLM, 8000 sentences, 1 epoch, drop 2 layers by sensitivity,
    # re-finetune, ONNX Runtime dynamic INT8 of the pruned model. About 5-10 minutes on 2 cores.
    "quick": {},
    # The compression studies' plan on MiniLM: a longer fine-tune (all of SST-2 train, up to 3 epochs, early
    # stopping) aiming at >= 0.88 dev accuracy, sensitivity ranking, 6 -> 4 layers re-finetuned with
    # distillation, head/FFN pruning (25% of heads, 40% of FFN neurons: ~35% fewer encoder parameters) with
    # distillation and recovery, then every precision of every fp32 variant. Hours on 2 cores.
    "study": {
        "train_examples": None,
        "finetune": {"epochs": 3, "learning_rate": 5e-5, "batch_size": 32, "max_length": 64},
        "sensitivity": {"enabled": True},
        "layer_pruning": {
            "target_layers": 4, "strategy": "sensitivity", "distill": {},
            "refinetune": {"epochs": 2, "learning_rate": 5e-5, "batch_size": 32, "max_length": 64},
        },
        "head_ffn_pruning": {
            "head_sparsity": 0.25, "ffn_sparsity": 0.4, "ffn_method": "gradient",
            "schedule": {"kind": "cubic", "start": 0.0, "end": 0.7, "prune_every": 100},
            "train": {"epochs": 1, "learning_rate": 5e-5, "batch_size": 32, "max_length": 64},
            "recovery": {"epochs": 1, "learning_rate": 3e-5, "batch_size": 32, "max_length": 64},
            "distill": {},
        },
        "precision": {
            "targets": ["all"], "fp16_bf16": {"dtype": "auto"}, "int8_dynamic": {}, "int8_static": {},
            "int8_inductor": {}, "int8_qat": {}, "int8_mixed": {}, "int4_nf4": {},
        },
    },
    # What docs/RESULTS.md's study section ran (about 36 minutes on 2 cores): "study" with one epoch per
    # training stage and capped stage data. Exactly "study" with these overrides (tests/unit/test_recipe.py):
    # family "minilm-study"; fine-tune 1 epoch at lr 1e-4 on all of SST-2 train; re-finetune with
    # distillation 1 epoch at lr 1e-4 on 24,000 sentences; head/FFN pruning and its recovery 1 epoch on
    # 12,000 sentences each; 100 QAT steps.
    "study-1epoch": {
        "family": "minilm-study",
        "train_examples": None,
        "finetune": {"epochs": 1, "learning_rate": 1e-4, "batch_size": 32, "max_length": 64},
        "sensitivity": {"enabled": True},
        "layer_pruning": {
            "target_layers": 4, "strategy": "sensitivity", "distill": {},
            "refinetune": {"epochs": 1, "learning_rate": 1e-4, "batch_size": 32, "max_length": 64,
                           "max_examples": 24000},
        },
        "head_ffn_pruning": {
            "head_sparsity": 0.25, "ffn_sparsity": 0.4, "ffn_method": "gradient",
            "schedule": {"kind": "cubic", "start": 0.0, "end": 0.7, "prune_every": 100},
            "train": {"epochs": 1, "learning_rate": 5e-5, "batch_size": 32, "max_length": 64, "max_examples": 12000},
            "recovery": {"epochs": 1, "learning_rate": 3e-5, "batch_size": 32, "max_length": 64,
                         "max_examples": 12000},
            "distill": {},
        },
        "precision": {
            "targets": ["all"], "fp16_bf16": {"dtype": "auto"}, "int8_dynamic": {}, "int8_static": {},
            "int8_inductor": {}, "int8_qat": {"steps": 100}, "int8_mixed": {}, "int4_nf4": {},
        },
    },
    # The fastest CPU variant we expect within ~1 point of the baseline: 6 -> 4 layers (sensitivity),
    # re-finetuned for 2 epochs with distillation, then ONNX Runtime dynamic INT8 of a fused graph
    # (attention/LayerNorm/GELU fusion, VNNI preset). No head/FFN pruning: ragged head counts defeat the
    # fused attention kernel, which buys more on CPU than the removed heads would.
    "max-cpu": {
        "train_examples": 20000,
        "finetune": {"epochs": 2, "learning_rate": 1e-4, "batch_size": 32, "max_length": 64},
        "layer_pruning": {
            "target_layers": 4, "strategy": "sensitivity", "distill": {},
            "refinetune": {"epochs": 2, "learning_rate": 1e-4, "batch_size": 32, "max_length": 64},
        },
        "precision": {"targets": ["final"], "int8_dynamic": {"optimize": True}},
    },
    # For tests: a few dozen sentences, one short epoch each.
    "tiny": {
        "train_examples": 48,
        "validation_examples": 32,
        "test_examples": 32,
        "finetune": _TINY_TRAIN,
        "sensitivity": {"enabled": False},
        "layer_pruning": {"drop": 1, "strategy": "top", "refinetune": _TINY_TRAIN},
    },
    # For tests: every stage once on a tiny model, in well under a minute of compute. int8_inductor is
    # left out: compiling costs tens of seconds per load, and tests/unit/test_inductor_int8.py covers it.
    "every-stage-tiny": {
        "train_examples": 64,
        "validation_examples": 32,
        "test_examples": 32,
        "finetune": _TINY_TRAIN,
        "sensitivity": {"enabled": True},
        "layer_pruning": {"drop": 1, "strategy": "sensitivity", "refinetune": _TINY_TRAIN, "distill": {}},
        "head_ffn_pruning": {
            "head_sparsity": 0.25, "ffn_sparsity": 0.5, "ffn_method": "gradient",
            "schedule": {"start": 0.0, "end": 0.5, "prune_every": 1}, "importance_batches": 2,
            "train": _TINY_TRAIN, "recovery": _TINY_TRAIN, "distill": {},
        },
        "precision": {
            "targets": ["pruned-fp32", "heads-fp32"], "fp16_bf16": {}, "int8_dynamic": {"optimize": True},
            "int8_static": {"calibration_samples": 16}, "int8_qat": {"steps": 4, "batch_size": 8, "max_length": 32},
            "int8_mixed": {"probe_examples": 16}, "int4_nf4": {"compute_dtype": "fp32"},
        },
    },
}

# Keys of which a recipe gives one: an override that sets one clears the other from the preset.
_EXCLUSIVE = {"layer_pruning": ("drop", "target_layers")}


def build_recipe(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """A preset's recipe with the caller's overrides merged on top (nested dicts merge)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    base = _deep_merge({}, PRESETS.get(preset or "quick", {}))
    extra = overrides or {}
    for section, keys in _EXCLUSIVE.items():
        given, preset_part = extra.get(section), base.get(section)
        if isinstance(given, dict) and isinstance(preset_part, dict):
            for key in keys:
                if key in given:
                    for other in keys:
                        if other != key and other not in given:
                            preset_part.pop(other, None)
    return Recipe.model_validate(_deep_merge(base, extra))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            out[key] = _deep_merge(current, value)
        elif isinstance(value, dict):
            out[key] = _deep_merge({}, value)
        else:
            out[key] = value
    return out
