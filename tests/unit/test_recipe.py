"""The typed recipe: presets validate, bad values and combinations are refused with useful messages."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from slimbert.compression.precision_steps import planned_precision
from slimbert.compression.presets import PRESETS, build_recipe
from slimbert.compression.recipe import Recipe
from slimbert.records import PresetName


def errors(overrides: dict[str, Any], preset: str = "quick") -> str:
    with pytest.raises(ValidationError) as info:
        build_recipe(preset, overrides)
    return "\n".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in info.value.errors())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_validates_and_round_trips(preset: str) -> None:
    recipe = build_recipe(preset)
    # The job record and every manifest hold this dump; it must rebuild the same recipe.
    again = Recipe.model_validate(recipe.model_dump(mode="json"))
    assert again == recipe
    assert recipe.precision_targets()[0] in recipe.fp32_variants()


def test_preset_names_match_the_literal() -> None:
    assert set(PRESETS) == set(get_args(PresetName))


def test_quick_keeps_the_readme_default_job() -> None:
    recipe = build_recipe("quick")
    assert recipe.base_model == "sentence-transformers/all-MiniLM-L6-v2" and recipe.train_examples == 8000
    assert recipe.layer_pruning is not None and recipe.layer_pruning.drop == 2
    assert recipe.layer_pruning.strategy == "sensitivity" and recipe.layer_pruning.distill is None
    assert recipe.head_ffn_pruning is None
    assert recipe.fp32_variants() == ["baseline-fp32", "pruned-fp32"]
    assert [s.variant for s in planned_precision(recipe)] == ["pruned-int8"]
    assert build_recipe(None) == recipe


def test_study_plan() -> None:
    recipe = build_recipe("study")
    assert recipe.layer_pruning is not None and recipe.layer_pruning.target_layers == 4
    assert recipe.layer_pruning.distill is not None and recipe.layer_pruning.distill.temperature.start == 10
    assert recipe.head_ffn_pruning is not None and recipe.head_ffn_pruning.distill is not None
    names = [s.variant for s in planned_precision(recipe)]
    for v in ("baseline-int8", "pruned-int8", "pruned-int8-static", "pruned-int8-inductor", "pruned-int8-qat",
              "pruned-int4", "pruned-bf16", "heads-int8", "heads-bf16"):
        assert v in names
    inductor = next(s for s in planned_precision(recipe) if s.variant == "pruned-int8-inductor")
    assert (inductor.method, inductor.source) == ("int8-inductor", "pruned-fp32")
    assert "pruned-fp16" in [s.variant for s in planned_precision(recipe, device="gpu")]


def test_max_cpu_is_layer_pruning_distillation_and_fused_int8() -> None:
    recipe = build_recipe("max-cpu")
    assert recipe.precision is not None and recipe.precision.int8_dynamic is not None
    assert recipe.precision.int8_dynamic.optimize and recipe.layer_pruning is not None
    assert [s.variant for s in planned_precision(recipe)] == ["pruned-int8"]


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        ({"layer_pruning": {"strategy": "random"}}, "layer_pruning.strategy", "'sensitivity', 'top' or 'alternate'"),
        ({"precision": {"targets": ["nope"]}}, "precision.targets.0", "'final', 'all', 'baseline-fp32'"),
        ({"precision": {"int8_static": {"method": "mse"}}}, "precision.int8_static.method", "'minmax'"),
        ({"precision": {"int4_nf4": {"compute_dtype": "fp8"}}}, "precision.int4_nf4.compute_dtype", "'bf16'"),
        ({"precision": {"fp16_bf16": {"dtype": "fp8"}}}, "precision.fp16_bf16.dtype", "'auto', 'bf16' or 'fp16'"),
        ({"head_ffn_pruning": {"ffn_method": "random"}}, "head_ffn_pruning.ffn_method", "'weight_norm'"),
        ({"head_ffn_pruning": {"head_sparsity": 0.95}}, "head_ffn_pruning.head_sparsity", "less than or equal to 0.9"),
        ({"layer_pruning": {"distill": {"alpha": {"start": 1.5}}}}, "layer_pruning.distill.alpha.start",
         "less than or equal to 1"),
        ({"layer_pruning": {"distill": {"temperature": {"end": 0}}}}, "layer_pruning.distill.temperature.end",
         "greater than 0"),
        ({"finetune": {"epochs": 0}}, "finetune.epochs", "greater than or equal to 1"),
        ({"finetune": {"epoch": 2}}, "finetune.epoch", "Extra inputs are not permitted"),
        ({"sensitivity": {"enable": True}}, "sensitivity.enable", "Extra inputs are not permitted"),
        ({"int4": {}}, "int4", "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_values(overrides: dict[str, Any], field: str,
                                                               allowed: str) -> None:
    text = errors(overrides)
    line = next((ln for ln in text.splitlines() if ln.startswith(field + ":")), None)
    assert line is not None, text
    assert allowed in line, line


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"layer_pruning": {"drop": 2, "target_layers": 4}}, "layer_pruning.drop or layer_pruning.target_layers"),
        ({"sensitivity": {"enabled": False}}, "needs sensitivity.enabled=true"),
        ({"precision": {"targets": ["heads-fp32"]}}, "heads-fp32 needs head_ffn_pruning"),
        ({"layer_pruning": None, "precision": {"targets": ["pruned-fp32"]}}, "pruned-fp32 needs layer_pruning"),
        ({"precision": {"int8_dynamic": None}}, "precision enables no method"),
        ({"head_ffn_pruning": {"head_sparsity": 0, "ffn_sparsity": 0}}, "head_sparsity > 0 or ffn_sparsity > 0"),
        ({"head_ffn_pruning": {"schedule": {"start": 0.5, "end": 0.5}}}, "must be greater than schedule.start"),
        ({"finetune": None, "layer_pruning": None}, "precision needs a trained model"),
    ],
)
def test_invalid_combinations_say_what_to_change(overrides: dict[str, Any], message: str) -> None:
    assert message in errors(overrides)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ValueError, match="quick.*study|max-cpu"):
        build_recipe("fast")


def test_target_layers_override_replaces_the_presets_drop() -> None:
    recipe = build_recipe("tiny", {"layer_pruning": {"target_layers": 1}})
    assert recipe.layer_pruning is not None
    assert recipe.layer_pruning.drop is None and recipe.layer_pruning.target_layers == 1
    assert recipe.layer_pruning.strategy == "top"  # the rest of the preset's section survives
    assert recipe.layer_pruning.count_to_drop(3) == 2
    with pytest.raises(ValueError, match="impossible for a model with 3 encoder layers"):
        build_recipe("quick", {"layer_pruning": {"drop": 3}}).layer_pruning.count_to_drop(3)  # type: ignore[union-attr]


def test_precision_targets_resolve_final_and_all() -> None:
    recipe = build_recipe("every-stage-tiny", {"precision": {"targets": ["final"]}})
    assert recipe.precision_targets() == ["heads-fp32"]
    recipe = build_recipe("every-stage-tiny", {"precision": {"targets": ["all"]}})
    assert recipe.precision_targets() == ["baseline-fp32", "pruned-fp32", "heads-fp32"]
    recipe = build_recipe("quick", {"layer_pruning": None})
    assert [s.variant for s in planned_precision(recipe)] == ["baseline-int8"]
    assert build_recipe("quick", {"precision": None}).precision_targets() == []


def test_legacy_top_level_int8_dynamic_still_validates() -> None:
    # Job records queued before the precision stage existed carry int8_dynamic at the top level.
    old = build_recipe("tiny").model_dump(mode="json")
    del old["precision"], old["sensitivity"], old["head_ffn_pruning"]
    old["int8_dynamic"] = {"per_channel": True, "isa": "auto"}
    old["layer_pruning"].pop("target_layers"), old["layer_pruning"].pop("distill")
    recipe = Recipe.model_validate(old)
    assert recipe.precision is not None and recipe.precision.int8_dynamic is not None
    assert recipe.precision.int8_dynamic.per_channel is True
    assert Recipe.model_validate({**old, "int8_dynamic": None}).precision is None


# The overrides docs/RESULTS.md's study section once ran with on top of "study"; "study-1epoch" must be exactly
# that, so `./run.sh up --preset study-1epoch` reproduces the run the section reports.
STUDY_SECTION_OVERRIDES: dict[str, Any] = {
    "family": "minilm-study", "train_examples": None, "finetune": {"epochs": 1, "learning_rate": 1e-4},
    "layer_pruning": {"refinetune": {"epochs": 1, "learning_rate": 1e-4, "max_examples": 24000}},
    "head_ffn_pruning": {"train": {"epochs": 1, "max_examples": 12000},
                         "recovery": {"epochs": 1, "max_examples": 12000}},
    "precision": {"int8_qat": {"steps": 100}},
}


def test_study_1epoch_is_study_with_the_results_overrides() -> None:
    assert build_recipe("study-1epoch") == build_recipe("study", STUDY_SECTION_OVERRIDES)
    assert build_recipe("study-1epoch").model_dump() == build_recipe("study", STUDY_SECTION_OVERRIDES).model_dump()
    # and it is not the full study: one epoch per stage, capped stage data
    assert build_recipe("study-1epoch") != build_recipe("study")


def test_precision_targets_name_the_fp32_variants() -> None:
    from typing import get_args

    from slimbert.compression.recipe import PrecisionTarget
    from slimbert.records import FP32_VARIANTS

    assert set(get_args(PrecisionTarget)) - {"final", "all"} == set(FP32_VARIANTS)
