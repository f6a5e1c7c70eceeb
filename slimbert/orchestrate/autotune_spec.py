"""What an autotune job is asked for (``POST /jobs/autotune``) and the paired gate it decides with.

Kept apart from the search itself so the API validates a request without loading the search's stack.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from slimbert.benchmark.stats import paired_difference
from slimbert.compression.finetune import FinetuneConfig
from slimbert.metrics import interval, paired_bootstrap_margin, score
from slimbert.records import MetricName
from slimbert.store.manifest import NAME_PATTERN

PrecisionChoice = Literal["fp32", "bf16", "int8", "int8-optimized", "int8-per-channel", "int8-static",
                          "int8-inductor"]
PRECISIONS: tuple[PrecisionChoice, ...] = ("fp32", "bf16", "int8", "int8-optimized", "int8-per-channel", "int8-static",
                                           "int8-inductor")
# Train sentences that calibrate static INT8 ranges (never dev sentences: the gate measures on those).
CALIBRATION_SAMPLES = 128


class AutotuneSpec(BaseModel):
    """POST /jobs/autotune: a fine-tuned family, a gate, a target and a budget."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(pattern=NAME_PATTERN)
    gate_kind: Literal["relative", "absolute"] = "relative"
    gate: float = Field(default=0.99, gt=0, le=1.5, description="fraction of baseline, or an accuracy")
    require_point: bool = Field(
        default=False, description="also require the measured accuracy itself to reach the gate's threshold")
    target: Literal["latency", "throughput", "size"] = "latency"
    batch_size: int = Field(default=1, ge=1, le=256)
    budget_minutes: float = Field(default=20, gt=0, le=24 * 60)
    max_drop: int = Field(default=2, ge=0, le=24, description="deepest cut, in encoder layers")
    min_drop: int = Field(default=1, ge=1, le=24, description="shallowest cut to train (the uncut baseline is "
                                                             "always tried: it costs no training)")
    distill: list[bool] = Field(default=[True, False], min_length=1)
    precisions: list[PrecisionChoice] = Field(default=list(PRECISIONS), min_length=1)
    screen_examples: int = Field(default=256, ge=32, le=872, description="held-out dev subset for screening")
    train_examples: int = Field(default=4000, ge=32, le=67_349)
    refinetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=1, learning_rate=1e-4))
    runs: int = Field(default=30, ge=3, le=1000)

    @field_validator("min_drop")
    @classmethod
    def _drops_in_order(cls, min_drop: int, info: ValidationInfo) -> int:
        # A field validator (max_drop is declared first) so the 422 names min_drop itself.
        max_drop = info.data.get("max_drop")
        if max_drop and min_drop > max_drop:
            raise ValueError(f"min_drop ({min_drop}) is above max_drop ({max_drop}): set min_drop to at most "
                             f"{max_drop}, or raise max_drop")
        return min_drop


def paired_gate(cand: list[int], base: list[int], labels: list[int], gate: float,
                kind: Literal["relative", "absolute"] = "relative", require_point: bool = False,
                metric: MetricName = "accuracy", num_labels: int = 2) -> dict[str, Any]:
    """Gate on the paired difference of the task's primary ``metric``: pass unless the candidate is
    significantly (one-sided 95%) below the threshold (``gate`` times the baseline's value on the same
    examples, or an absolute value). Pairing on the same examples gives a far tighter interval than comparing
    two independent intervals. For accuracy the margin is the normal one of the paired correctness difference;
    for the F1s, a seeded paired bootstrap. ``require_point`` adds a second condition, for a user who must
    not ship a variant that measured below the bar (say, a peer's accuracy): the value itself reaches the
    threshold."""
    n = len(labels)
    acc_c = sum(int(p == y) for p, y in zip(cand, labels, strict=True)) / n
    acc_b = sum(int(p == y) for p, y in zip(base, labels, strict=True)) / n
    if metric == "accuracy":
        value_c, value_b = acc_c, acc_b
        mean, half = paired_difference(cand, base, labels)
    else:
        value_c, value_b = score(metric, cand, labels, num_labels), score(metric, base, labels, num_labels)
        mean, half = paired_bootstrap_margin(metric, cand, base, labels, num_labels)
    threshold = gate * value_b if kind == "relative" else gate
    upper = value_c + half
    lo, hi = interval(metric, cand, labels, num_labels)
    return {"metric": metric, "value": round(value_c, 4), "baseline_value": round(value_b, 4),
            "accuracy": round(acc_c, 4), "baseline_accuracy": round(acc_b, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "difference": round(mean, 4), "difference_upper95": round(mean + half, 4),
            "threshold": round(threshold, 4),
            "passes": upper >= threshold and (not require_point or value_c >= threshold),
            "rule": f"passes unless {metric} + one-sided 95% paired margin < threshold"
                    + (f", and {metric} >= threshold" if require_point else "")}
