"""The typed compression recipe, validated up front (its named presets: ``presets.py``).

Stages run in this order, each optional: fine-tune the baseline, layer sensitivity, structured layer
pruning (with optional distillation), attention-head and FFN-neuron pruning, then precision variants
of chosen fp32 variants. Every variant's manifest carries the recipe with every default resolved
(``Recipe.model_dump()``), so any variant can be rebuilt from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from slimbert.compression.distill import DistillationSchedule
from slimbert.compression.finetune import FinetuneConfig
from slimbert.compression.heads import FfnMethod, FfnScope
from slimbert.compression.schedules import Schedule, ScheduleKind
from slimbert.records import BASELINE, HEADS, PRUNED, Activations, CalibrationMethod, Isa, MetricChoice
from slimbert.store.manifest import NAME_PATTERN

LayerStrategy = Literal["sensitivity", "top", "alternate"]
# "final" is the most compressed fp32 variant the recipe makes; "all" is every fp32 variant it makes.
# The fp32 names are literals here because a Literal type needs them spelt; records.FP32_VARIANTS is checked
# against it (tests/unit/test_recipe.py).
PrecisionTarget = Literal["final", "all", "baseline-fp32", "pruned-fp32", "heads-fp32"]
DEFAULT_DROP = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(FinetuneConfig):
    """``FinetuneConfig`` that refuses unknown keys (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


class TemperatureRamp(_Strict):
    start: float = Field(default=10.0, gt=0, le=100)
    end: float = Field(default=2.0, gt=0, le=100)


class AlphaRamp(_Strict):
    start: float = Field(default=0.9, ge=0, le=1)
    end: float = Field(default=0.2, ge=0, le=1)


class Distillation(_Strict):
    """Knowledge distillation from the fine-tuned baseline (teacher) during a training run.

    Temperature and alpha (the weight of the soft loss) move linearly from ``start`` to ``end``.
    """

    temperature: TemperatureRamp = Field(default_factory=TemperatureRamp)
    alpha: AlphaRamp = Field(default_factory=AlphaRamp)

    def schedule(self) -> DistillationSchedule:
        return DistillationSchedule(
            Schedule(self.temperature.start, self.temperature.end), Schedule(self.alpha.start, self.alpha.end)
        )


class Sensitivity(_Strict):
    """Layer sensitivity by ablation: drop each encoder layer alone and measure the dev accuracy."""

    enabled: bool = True


class LayerPruning(_Strict):
    """Physical removal of encoder layers, then a re-finetune (optionally distilled from the baseline).

    Give ``target_layers`` (the depth to reach) or ``drop`` (how many to remove), not both;
    with neither, ``drop`` is 2.
    """

    drop: int | None = Field(default=None, ge=1, le=47, description="how many encoder layers to remove")
    target_layers: int | None = Field(default=None, ge=1, le=47, description="encoder depth to reach")
    strategy: LayerStrategy = "sensitivity"
    refinetune: TrainConfig = Field(default_factory=TrainConfig)
    distill: Distillation | None = None

    @model_validator(mode="after")
    def _drop_or_target(self) -> LayerPruning:
        if self.drop is not None and self.target_layers is not None:
            raise ValueError("give layer_pruning.drop or layer_pruning.target_layers, not both")
        if self.drop is None and self.target_layers is None:
            self.drop = DEFAULT_DROP
        return self

    def count_to_drop(self, num_layers: int) -> int:
        """Layers to remove from a ``num_layers``-deep encoder; ValueError when impossible."""
        count = self.drop if self.drop is not None else num_layers - (self.target_layers or num_layers)
        if not 1 <= count <= num_layers - 1:
            asked = f"drop={self.drop}" if self.drop is not None else f"target_layers={self.target_layers}"
            raise ValueError(
                f"layer_pruning.{asked} is impossible for a model with {num_layers} encoder layers: "
                f"drop between 1 and {num_layers - 1} (target_layers between 1 and {num_layers - 1})"
            )
        return count


class PruneSchedule(_Strict):
    """When pruning happens inside the pruning run, as fractions of its training steps."""

    kind: ScheduleKind = "cubic"
    start: float = Field(default=0.0, ge=0, lt=1)
    end: float = Field(default=0.7, gt=0, le=1)
    prune_every: int = Field(default=25, ge=1, le=100_000, description="steps between pruning events")

    @model_validator(mode="after")
    def _ordered(self) -> PruneSchedule:
        if self.end <= self.start:
            raise ValueError(f"schedule.end ({self.end}) must be greater than schedule.start ({self.start})")
        return self


class HeadFfnPruning(_Strict):
    """Attention heads and FFN neurons removed gradually (cubic sparsity) while training, then recovery.

    ``train`` is the run during which the pruner acts (early stopping does not apply while shapes change);
    ``recovery`` is an ordinary fine-tune afterwards. Applied to the layer-pruned model when there is one.
    """

    head_sparsity: float = Field(default=0.25, ge=0, le=0.9, description="fraction of heads to remove")
    ffn_sparsity: float = Field(default=0.4, ge=0, le=0.9, description="fraction of FFN neurons to remove")
    ffn_method: FfnMethod = "weight_norm"
    ffn_scope: FfnScope = "per_layer"
    schedule: PruneSchedule = Field(default_factory=PruneSchedule)
    importance_batches: int = Field(default=8, ge=1, le=256, description="batches per importance estimate")
    train: TrainConfig = Field(default_factory=TrainConfig)
    recovery: TrainConfig | None = Field(default_factory=TrainConfig)
    distill: Distillation | None = None

    @model_validator(mode="after")
    def _something_to_prune(self) -> HeadFfnPruning:
        if self.head_sparsity == 0 and self.ffn_sparsity == 0:
            raise ValueError("head_ffn_pruning needs head_sparsity > 0 or ffn_sparsity > 0 (or set it to null)")
        return self


class HalfPrecision(_Strict):
    """16-bit torch weights. ``auto``: fp16 on a GPU worker, bf16 on a CPU with native bf16, else skipped."""

    dtype: Literal["auto", "bf16", "fp16"] = "auto"


PER_CHANNEL_HELP = ("one weight scale per output channel; null: per-channel where the CPU needs 7-bit weights "
                    "(x86 without VNNI), per-tensor elsewhere")


class Int8Dynamic(_Strict):
    """ONNX Runtime dynamic INT8 (weights int8, activations quantized per batch at run time)."""

    per_channel: bool | None = Field(default=None, description=PER_CHANNEL_HELP)
    isa: Isa = "auto"
    optimize: bool = Field(default=False, description="fuse attention/LayerNorm/GELU before quantizing")


class Int8Static(_Strict):
    """ONNX Runtime static INT8: activation ranges calibrated on SST-2 train sentences."""

    calibration_samples: int = Field(default=256, ge=8, le=4096)
    method: CalibrationMethod = "minmax"
    keep_ffn_output_fp32: bool = Field(default=True, description="leave each FFN output product in fp32: its "
                                       "input (the GELU output) has outliers one static range cannot cover")
    per_channel: bool | None = Field(default=None, description=PER_CHANNEL_HELP)


class Int8Inductor(_Strict):
    """INT8 by PyTorch 2 export quantization (torchao's X86InductorQuantizer), compiled by Inductor onto
    oneDNN, which uses AMX-INT8 where the CPU has it; activations calibrated on SST-2 train sentences
    (``static``) or measured per batch (``dynamic``). Compiled when loaded, on the machine that serves."""

    calibration_samples: int = Field(default=256, ge=8, le=4096)
    activations: Activations = "static"
    max_autotune: bool = Field(default=False, description="let Inductor pick its AMX GEMM template or oneDNN "
                                                          "per linear (minutes to compile at load, faster runs)")


class Int8Qat(_Strict):
    """INT8 quantization-aware fine-tuning, exported as ONNX Runtime dynamic INT8."""

    steps: int = Field(default=200, ge=1, le=20_000)
    lr: float = Field(default=2e-5, gt=0, le=1e-2)
    batch_size: int = Field(default=32, ge=1, le=512)
    max_length: int = Field(default=64, ge=8, le=512)


class Int8Mixed(_Strict):
    """Mixed precision: ONNX Runtime dynamic INT8 except the encoder layers INT8 hurts most, kept fp32.
    Each layer's sensitivity is measured by quantizing it alone (KL of the logits against fp32 on
    SST-2 train probe sentences)."""

    keep_fp32_layers: int = Field(default=1, ge=0, le=23, description="most INT8-sensitive layers kept fp32")
    probe_examples: int = Field(default=256, ge=8, le=4096)
    per_channel: bool | None = Field(default=None, description=PER_CHANNEL_HELP)


class Int4Nf4(_Strict):
    """bitsandbytes NF4 weights for the encoder's Linear layers (the classifier stays fp32)."""

    compute_dtype: Literal["bf16", "fp32"] = "bf16"


class Precision(_Strict):
    """Precision variants of chosen fp32 variants, named ``{structure}-{precision}`` (pruned-int8, ...)."""

    targets: list[PrecisionTarget] = Field(default_factory=lambda: list[PrecisionTarget](["final"]), min_length=1)
    fp16_bf16: HalfPrecision | None = None
    int8_dynamic: Int8Dynamic | None = Field(default_factory=Int8Dynamic)
    int8_static: Int8Static | None = None
    int8_inductor: Int8Inductor | None = None
    int8_qat: Int8Qat | None = None
    int8_mixed: Int8Mixed | None = None
    int4_nf4: Int4Nf4 | None = None

    @model_validator(mode="after")
    def _some_method(self) -> Precision:
        if not any((self.fp16_bf16, self.int8_dynamic, self.int8_static, self.int8_inductor, self.int8_qat,
                    self.int8_mixed, self.int4_nf4)):
            raise ValueError(
                "precision enables no method: set one of fp16_bf16, int8_dynamic, int8_static, int8_inductor, "
                "int8_qat, int8_mixed, int4_nf4 (or set precision to null)"
            )
        return self


class Recipe(_Strict):
    """Everything a compression job does, with every default resolved."""

    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    family: str | None = Field(default=None, pattern=NAME_PATTERN)
    dataset: str | None = Field(default=None, pattern=NAME_PATTERN,
                                description="a stored dataset (POST /datasets); null = the embedded GLUE SST-2")
    metric: MetricChoice = Field(
        default="auto", description="the primary metric that gates and reports; auto: f1 of the positive class for "
        "binary pair tasks, macro_f1 when train's smallest class is under half its largest, else accuracy")
    train_examples: int | None = Field(default=8000, ge=8, description="seeded train subset; null = all")
    validation_examples: int | None = Field(
        default=None, ge=8, le=20_000, description="carved from train (stratified, data_seed) when the dataset has no "
        "validation split, before the train subset is drawn; null = 10% of train, at most 872. It selects (early "
        "stopping, sensitivity, gates), never reports")
    test_examples: int | None = Field(
        default=None, ge=8, validation_alias=AliasChoices("test_examples", "dev_examples"),
        description="seeded subset of the test split that every reported figure comes from (SST-2: GLUE's dev, "
        "872); null = all of it")
    data_seed: int = 0
    finetune: TrainConfig | None = Field(default_factory=TrainConfig)
    sensitivity: Sensitivity = Field(default_factory=Sensitivity)
    layer_pruning: LayerPruning | None = Field(default_factory=LayerPruning)
    head_ffn_pruning: HeadFfnPruning | None = None
    precision: Precision | None = Field(default_factory=Precision)
    eval_max_length: int = Field(default=128, ge=8, le=512)

    @model_validator(mode="before")
    @classmethod
    def _legacy_int8(cls, data: Any) -> Any:
        # Recipes before the precision stage had a top-level int8_dynamic; queued records may still do.
        if isinstance(data, dict) and "int8_dynamic" in data and "precision" not in data:
            data = dict(data)
            legacy = data.pop("int8_dynamic")
            data["precision"] = None if legacy is None else {"int8_dynamic": legacy}
        return data

    @model_validator(mode="after")
    def _combinations(self) -> Recipe:
        lp = self.layer_pruning
        if lp is not None and lp.strategy == "sensitivity" and not self.sensitivity.enabled:
            raise ValueError(
                "layer_pruning.strategy 'sensitivity' needs sensitivity.enabled=true; "
                "or use strategy 'top' or 'alternate'"
            )
        if self.precision is not None:
            if self.finetune is None and lp is None and self.head_ffn_pruning is None:
                raise ValueError("precision needs a trained model: enable finetune, layer_pruning or head_ffn_pruning")
            made = self.fp32_variants()
            missing = [t for t in self.precision.targets if t not in ("final", "all") and t not in made]
            if missing:
                raise ValueError(
                    f"precision.targets {missing} are not made by this recipe; it makes {list(made)} "
                    "(pruned-fp32 needs layer_pruning, heads-fp32 needs head_ffn_pruning), or use 'final' / 'all'"
                )
        return self

    def fp32_variants(self) -> list[str]:
        """The fp32 variants this recipe publishes, in the order it makes them."""
        made = [BASELINE]
        if self.layer_pruning is not None:
            made.append(PRUNED)
        if self.head_ffn_pruning is not None:
            made.append(HEADS)
        return made

    def precision_targets(self) -> list[str]:
        """The fp32 variants that get precision variants, resolved from 'final' / 'all', in order."""
        if self.precision is None:
            return []
        made = self.fp32_variants()
        chosen: set[str] = set()
        for target in self.precision.targets:
            chosen.update(made if target == "all" else [made[-1]] if target == "final" else [target])
        return [v for v in made if v in chosen]

    def uses_sensitivity(self) -> bool:
        return self.sensitivity.enabled

    def family_name(self) -> str:
        """The family directory: given, or named from both the base model and the dataset (model x dataset)."""
        if self.family:
            return self.family
        stem = self.base_model.rstrip("/").split("/")[-1].lower()
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
        data = self.dataset or "sst2"
        return f"{safe[: 63 - len(data)] or 'model'}-{data}"
