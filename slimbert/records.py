"""Names and literals that cross module boundaries, each defined once.

A variant name is a directory in the store, a key in job results and a column in the showdown, so
``baseline-fp32`` is spelt here and nowhere else. The typed records that travel between the
workers, the store and the API (manifests, job records, benchmark runs) are built from these.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
)

# The structural variants a compression job makes, in the order it makes them.
BASELINE = "baseline-fp32"  # the fine-tuned model: every later variant's teacher and reference
PRUNED = "pruned-fp32"  # after layer pruning (and re-fine-tuning)
HEADS = "heads-fp32"  # after head/FFN pruning
FP32_VARIANTS: tuple[str, ...] = (BASELINE, PRUNED, HEADS)
FP32_SUFFIX = "-fp32"

# Runtimes a stored variant can name; ``inference.loader.load_variant`` dispatches on it.
Runtime = Literal["torch", "onnxruntime", "bitsandbytes", "torch-inductor"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnxruntime", "bitsandbytes", "torch-inductor")
# Runtimes that only run on an x86/ARM CPU (ONNX Runtime's CPU provider, Inductor's CPU program).
CPU_ONLY_RUNTIMES: frozenset[str] = frozenset({"onnxruntime", "torch-inductor"})

TargetDevice = Literal["cpu", "gpu", "any"]
Device = Literal["cpu", "gpu"]

# The precision methods of a recipe, one stage each per fp32 target.
Method = Literal["int8-dynamic", "int8-static", "int8-inductor", "int8-qat", "int8-mixed", "int4-nf4", "fp16-bf16"]
METHODS: tuple[Method, ...] = ("int8-dynamic", "int8-static", "int8-inductor", "int8-qat", "int8-mixed",
                               "int4-nf4", "fp16-bf16")
# Precision methods that belong with training on a GPU worker; the rest (INT8 export, calibration,
# QAT's ONNX export) run on the cpu queue, where their runtime serves.
GPU_PHASE_METHODS: frozenset[Method] = frozenset({"fp16-bf16", "int4-nf4"})

# ``AutoQuantizationConfig`` presets; "auto" picks the one this CPU runs exactly (hardware.detect_isa).
Isa = Literal["auto", "avx512_vnni", "avx2", "arm64"]
ISAS: tuple[str, ...] = ("avx512_vnni", "avx2", "arm64")
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
Activations = Literal["static", "dynamic"]  # Inductor INT8: calibrated ranges, or measured per batch
HalfDtype = Literal["bf16", "fp16"]
# The primary metric of a task (benchmark.metrics says how "auto" chooses).
MetricName = Literal["accuracy", "macro_f1", "f1"]
MetricChoice = Literal["auto", "accuracy", "macro_f1", "f1"]
Task = Literal["single", "pair"]  # single sentences, or sentence pairs

PresetName = Literal["quick", "study", "study-1epoch", "max-cpu", "tiny", "every-stage-tiny"]
JobKind = Literal["compress", "benchmark", "autotune"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
StageState = Literal["running", "done", "skipped", "failed"]
# Job records and reports are written group-readable and -writable: every service (API, cpu and gpu
# workers) shares the store's volume under one gid.
SHARED_FILE_MODE = 0o664


# --- Benchmark runs and the showdown ------------------------------------------------------------
# ``benchmark.runner`` measures a DeviceRun per device; the benchmark job stores a BenchmarkRun;
# ``report.showdown`` reads it into a Showdown. The records are lenient on purpose: runs stored by
# older code (and the hand-written ones in tests) must still load, so unknown keys are kept and a
# missing measurement is None.

SeqLen = int | Literal["dynamic"]  # tokens per sequence, or "dynamic": pad each batch to its longest text


class Record(BaseModel):
    """A JSON record whose dump holds exactly the fields that were set (plus unknown keys kept on load).

    So the stored files and the API answers keep their shape: a measurement that was never taken is
    absent, not null, and a run read from disk dumps back to the same JSON.
    """

    model_config = ConfigDict(extra="allow")

    # No return annotation: pydantic would take it for the serialized schema (a bare object), and the OpenAPI
    # document of every record in an API answer (the showdown) would lose its fields.
    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: SerializerFunctionWrapHandler):
        data: dict[str, Any] = handler(self)
        declared = type(self).model_fields
        return {k: v for k, v in data.items() if k in self.model_fields_set or k not in declared}


class LatencyRecord(Record):
    """Model-time latency at one batch size, in ms (``benchmark.latency.LatencyStats``), with what the
    runner adds: sequences per second, tokenization time apart, and the padded sequence length."""

    p50: float
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None  # the spread: sample standard deviation of the runs
    min: float | None = None
    max: float | None = None
    runs: int | None = None
    unit: str | None = None
    throughput_seq_s: float | None = None
    tokenize_ms: float | None = None
    seq_len: int | None = None


class GflopsRecord(Record):
    value: float
    method: str  # "measured" (FlopCounterMode on a forward pass) or "computed from the config"


class PeakMemoryRecord(Record):
    """``benchmark.memory.PeakMemory`` of one run at ``batch_size``."""

    peak_mb: float
    baseline_mb: float | None = None
    absolute_peak_mb: float | None = None
    method: str | None = None
    device: str | None = None
    batch_size: int | None = None


class McNemarRecord(Record):
    """``benchmark.stats.McNemarResult`` against the baseline, on the same sentences."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


class PairedRecord(Record):
    difference: float  # accuracy minus the baseline's, on the same sentences
    margin95: float  # its one-sided 95% margin


class VariantMeasurement(Record):
    """One variant on one device: what its manifest says, then what was measured (or ``na``)."""

    runtime: Runtime | None = None
    precision: str | None = None
    size_mb: float | None = None
    parameters: int | None = None
    na: str | None = None  # why it did not run on this device
    load_ms: float | None = None
    accuracy: float | None = None
    accuracy_ci95: tuple[float, float] | None = None  # Wilson interval
    macro_f1: float | None = None
    f1: float | None = None  # of the positive class (label id 1), binary tasks only
    metric: MetricName | None = None  # the task's primary metric, and its value and 95% interval
    metric_value: float | None = None
    metric_ci95: tuple[float, float] | None = None  # Wilson for accuracy, a seeded bootstrap for the F1s
    test_examples: int | None = Field(default=None, validation_alias=AliasChoices("test_examples", "dev_examples"))
    eval_seconds: float | None = None
    mcnemar_vs_baseline: McNemarRecord | None = None
    paired_vs_baseline: PairedRecord | None = None
    gflops_per_sequence: GflopsRecord | None = None
    latency: dict[str, LatencyRecord] = {}  # by batch size, as a string (a JSON key)
    peak_memory: PeakMemoryRecord | None = None


class MeasurementSettings(Record):
    """How a device's numbers were taken."""

    torch_threads: int | None = None
    batch_sizes: list[int] = []
    seq_len: SeqLen | None = None
    runs: int | None = None
    warmup: int | None = None
    order: str | None = None
    timer: str | None = None


class DeviceRun(Record):
    """What ``benchmark.runner.benchmark_device`` measured on one device; the job adds queue and worker."""

    device: Device | None = None
    environment: dict[str, Any] = {}  # hardware.describe_environment()
    variants: dict[str, VariantMeasurement] = {}
    measured: MeasurementSettings | None = None
    queue: str | None = None
    worker: str | None = None


class DeviceNA(Record):
    """A device the job did not run on (no live worker), and why."""

    device: Device | None = None
    na: str


class DeviceError(Record):
    """A device whose benchmark task failed."""

    device: Device | None = None
    error: str
    hint: str | None = None


def _device_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "na" if "na" in value else "error" if "error" in value else "run"
    return "na" if isinstance(value, DeviceNA) else "error" if isinstance(value, DeviceError) else "run"


DeviceResult = Annotated[
    Annotated[DeviceRun, Tag("run")] | Annotated[DeviceNA, Tag("na")] | Annotated[DeviceError, Tag("error")],
    Discriminator(_device_kind),
]


class RunSpec(Record):
    """The stored form of ``benchmark.runner.BenchmarkSpec`` (same fields, in the same order): that one
    validates requests; this one reads whatever a stored run holds."""

    family: str | None = None
    variants: list[str] | None = None
    devices: list[Device] | None = None
    batch_sizes: list[int]
    seq_len: SeqLen | None = None
    runs: int | None = None
    warmup: int | None = None
    accuracy: bool | None = None
    peak_memory: bool | None = None
    test_examples: int | None = Field(default=None, validation_alias=AliasChoices("test_examples", "dev_examples"))


class BenchmarkRun(Record):
    """One stored benchmark run (``<store>/<family>/.reports/<run_id>.json``)."""

    run_id: str
    created_at: str  # ISO 8601, as stored
    job_id: str | None = None
    family: str | None = None
    spec: RunSpec
    devices: dict[str, DeviceResult] = {}
    recommended_cpu: str | None = None  # the showdown's CPU pick as saved, which serving reads; older runs lack it


class DeviceCell(Record):
    """One variant on one device in the showdown: its measurements at the report's batch size, or ``na``."""

    na: str | None = None
    accuracy: float | None = None
    accuracy_ci95: tuple[float, float] | None = None
    macro_f1: float | None = None
    f1: float | None = None
    metric_value: float | None = None  # the primary metric (Showdown.metric) and its 95% interval
    metric_ci95: tuple[float, float] | None = None
    latency_ms: float | None = None  # p50
    p99_ms: float | None = None
    spread_ms: float | None = None
    runs: int | None = None
    throughput_seq_s: float | None = None
    tokenize_ms: float | None = None
    peak_mem_mb: float | None = None
    mcnemar_p: float | None = None
    load_ms: float | None = None
    accuracy_margin95: float | None = None
    gflops: float | None = None
    gflops_method: str | None = None
    latency_by_batch: dict[int, float] = {}  # p50 per batch size
    speedup: float | None = None  # the baseline's p50 over this one's


class ShowdownRow(Record):
    """One variant of the showdown: its manifest's facts and a cell per device."""

    variant: str
    runtime: Runtime
    precision: str
    layers: int | None = None
    parameters: int
    size_mb: float
    parent: str | None = None
    technique: str
    test_accuracy_at_creation: float | None = None  # reported
    validation_accuracy_at_creation: float | None = None
    test_metric_at_creation: float | None = None  # the primary metric, reported
    validation_metric_at_creation: float | None = None  # the primary metric: what the recommendations choose on
    compression_ratio: float | None = None
    cpu: DeviceCell
    gpu: DeviceCell

    def cell(self, device: Device) -> DeviceCell:
        return self.cpu if device == "cpu" else self.gpu


class Pick(Record):
    """A recommended variant with the figures it won on, or ``na``."""

    variant: str | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    size_mb: float | None = None
    na: str | None = None


class Recommendations(Record):
    cpu: Pick
    gpu: Pick
    smallest: Pick
    rule: str

    def picks(self) -> dict[str, Pick]:
        return {"cpu": self.cpu, "gpu": self.gpu, "smallest": self.smallest}


class EnvironmentSummary(Record):
    cpu: str | None = None
    flags: dict[str, Any] | None = None
    torch_threads: int | None = None
    gpu: str | None = None
    libraries: dict[str, Any] | None = None
    worker: str | None = None


class RunSummary(Record):
    """Which benchmark run a showdown shows, and where each device's numbers came from."""

    run_id: str
    created_at: str
    spec: RunSpec
    environment: dict[str, str | EnvironmentSummary] = {}  # a string: why the device has no numbers


class AutotuneTrailEntry(Record):
    candidate: str
    verdict: str
    validation_accuracy: float | None = None  # the gate reads validation
    cost_vs_baseline: float | None = None


class AutotuneSummary(Record):
    """The newest autotune run of a family: its winner and the trail of candidates."""

    run_id: str
    created_at: str
    variant: str | None = None
    winner: str | None = None
    cost_vs_baseline: float | None = None
    target: str
    batch_size: int
    threshold: float | None = None
    stopped: str | None = None
    trail: list[AutotuneTrailEntry] = []


class Showdown(Record):
    """The showdown report; ``model_dump(mode="json")`` is what ``GET /reports/showdown`` answers."""

    family: str
    batch_size: int
    gate: float
    rows: list[ShowdownRow]
    best: dict[str, str]  # column key ("size_mb", "cpu.latency_ms"...) -> the variant with the best value
    recommendations: Recommendations
    pareto_cpu: list[str]
    run: RunSummary | None = None
    autotune: AutotuneSummary | None = None
    splits: dict[str, Any] | None = None  # the baseline manifest's: which split selects, which reports
    metric: str = "accuracy"  # the task's primary metric: the gate and the recommendations read it
    dataset: str | None = None  # a stored dataset's name, or None for the embedded GLUE SST-2


# --- Compression job results --------------------------------------------------------------------
# What a compression job writes into its record's ``results`` (and ``GET /jobs/{id}`` answers).

class VariantResult(Record):
    """One published variant, as its job reports it: accuracy measured on its own runtime, never copied;
    the test split's is the one reported, the validation split's the one later choices read."""

    test_accuracy: float
    validation_accuracy: float
    test_metrics: dict[str, float] = {}  # accuracy, macro_f1 and (binary tasks) f1
    validation_metrics: dict[str, float] = {}
    parent: str | None = None
    technique: str
    runtime: Runtime
    precision: str
    size_mb: float
    num_parameters: int
    num_layers: int | None = None
    eval_seconds: float


class CompressResults(Record):
    """The results of a compression job: every variant made, every one skipped and why."""

    variants: dict[str, VariantResult] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)  # variant or stage -> the reason
    sensitivity: list[dict[str, Any]] | None = None  # per-layer ablation scores, when the recipe ranked layers
    encoder_parameters: dict[str, float] | None = None  # before, after, reduction (head/FFN pruning)
