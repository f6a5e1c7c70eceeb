"""Benchmark jobs: one task per device runs the harness; an aggregate step stores the run and closes the job.

Celery tasks call these plain functions with a job id and JSON; both run through the one job life cycle.
"""

from __future__ import annotations

import uuid
from typing import Any

from slimbert.benchmark.runner import BenchmarkSpec, run_device_benchmark
from slimbert.config import Settings
from slimbert.errors import NoWorkerForDevice, VariantNotFound
from slimbert.jobs.lifecycle import JobResult, Run, run_job
from slimbert.jobs.store import JobRecord, JobStore, open_job_store, utcnow
from slimbert.report.showdown import cpu_pick
from slimbert.store.bucket import open_variant_store


def new_run_id() -> str:
    return utcnow().strftime("%Y%m%dt%H%M%S") + "-" + uuid.uuid4().hex[:8]


def execute_benchmark_device(settings: Settings, job_id: str, device: str, *, queue: str, worker: str
                             ) -> dict[str, Any]:
    """Measure every variant of the job's spec on ``device``; failures come back as data, so the
    aggregate step still stores what the other devices measured."""
    jobs = open_job_store(settings)
    measured: dict[str, Any] = {}

    def body(record: JobRecord) -> JobResult:
        spec = BenchmarkSpec.model_validate(record.request["spec"])
        jobs.update(job_id, stage=f"benchmark-{device}")

        def progress(percent: float) -> None:
            jobs.update(job_id, progress=round(min(percent, 99.0), 1))

        measured.update(run_device_benchmark(settings, spec, device, progress), queue=queue, worker=worker)
        # The job goes on: the aggregate step stores this device's result beside the others'.
        return JobResult(handoff={})

    outcome = run_job(settings, job_id, body, Run(queue, worker, attempt_key=f"benchmark-{device}",
                                                  errors_as_data=True))
    if not measured:
        return {"device": device, "error": outcome.get("error", "not run"), "hint": outcome.get("hint")}
    return measured


def aggregate_benchmark(settings: Settings, job_id: str, results: list[dict[str, Any]], *, queue: str = "cpu",
                        worker: str = "unknown") -> dict[str, Any]:
    """Store the run (atomically, under a new run id) and close the job."""

    def body(record: JobRecord) -> JobResult:
        spec = BenchmarkSpec.model_validate(record.request["spec"])
        devices: dict[str, Any] = {r["device"]: r for r in results}
        for device, reason in record.request.get("unavailable_devices", {}).items():
            devices[device] = {"device": device, "na": reason}
        run_id = new_run_id()
        report: dict[str, Any] = {"run_id": run_id, "created_at": utcnow().isoformat(), "job_id": job_id,
                                  "family": spec.family, "spec": spec.model_dump(mode="json"), "devices": devices}
        store = open_variant_store(settings)
        # Stored with the run, so that serving reads the pick instead of building a showdown.
        report["recommended_cpu"] = cpu_pick(spec.family, store.manifests(spec.family), report)
        store.save_report(spec.family, run_id, report)
        errors = {d: r["error"] for d, r in devices.items() if "error" in r}
        if errors and len(errors) == len(results):
            return JobResult({"run_id": run_id}, failure=("; ".join(f"{d}: {e}" for d, e in errors.items()),
                                                          "see the worker log"))
        return JobResult({"run_id": run_id, "errors": errors}, stage="aggregate")

    outcome = run_job(settings, job_id, body, Run(queue, worker, resume=True))
    return {"run_id": outcome.get("run_id")} if "run_id" in outcome else outcome


def plan_benchmark(settings: Settings, spec: BenchmarkSpec, live_queues: set[str], jobs: JobStore,
                   *, parent_job: str | None = None) -> tuple[str, list[str]]:
    """Validate ``spec`` against the store and live workers, write the job record; returns the
    job id and the devices to fan out to. Devices without a live worker are kept as N/A reasons."""
    store = open_variant_store(settings)
    have = {m.variant for m in store.manifests(spec.family)}
    if not have:
        store.newest_family()  # raises with a hint when the store is empty
        raise VariantNotFound(f"family {spec.family} has no variants",
                              hint=f"families: {', '.join(store.families())}")
    for name in spec.variants or []:
        if name not in have:
            store.manifest(spec.family, name)
    requested = spec.devices or ["cpu", "gpu"]
    runnable: list[str] = [d for d in requested if d in live_queues]
    unavailable = {d: f"no live {d.upper()} worker" for d in ("cpu", "gpu") if d not in runnable}
    if not runnable:
        raise NoWorkerForDevice(f"no live worker for {', '.join(requested)}",
                                hint="start a worker: celery -A workers.celery_app worker -Q cpu")
    record = JobRecord(id=jobs.new_id(), kind="benchmark", family=spec.family, queue=",".join(runnable),
                       request={"spec": spec.model_dump(mode="json"), "devices": runnable,
                                "unavailable_devices": unavailable, "parent_job": parent_job})
    jobs.save(record)
    return record.id, runnable
