"""The store on an S3 bucket (moto's real server on 127.0.0.1): two "hosts" are two local caches that share
one bucket. Publishing is whole or invisible, readers trust only files whose sha256 matches, a republish
swaps in a new prefix, and job records, markers, benchmark runs and datasets live in the bucket too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.serving.catalog import Catalog
from slimbert.config import Settings
from slimbert.datasets import ColumnMapping, DatasetStore, RawDataset, open_dataset_store, open_inputs
from slimbert.datasets.bucket import BucketDatasetStore
from slimbert.errors import Conflict, DatasetNotFound, JobCancelled, JobNotFound, StoreError, VariantNotFound
from slimbert.jobs import JobRecord, JobStore, open_job_store
from slimbert.store.blobs import LocalBlobs
from slimbert.store.bucket import BucketVariantStore, open_variant_store
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore
from tests.s3_server import new_bucket, raw_client

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    return new_bucket(moto_endpoint)


def _settings(tmp_path: Path, endpoint: str, bucket: str, host: str) -> Settings:
    return Settings(store_url=f"s3://{bucket}/team", s3_endpoint_url=endpoint, store_dir=tmp_path / host,
                    store_refresh_s=0, min_free_disk_mb=0, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def hosts(tmp_path: Path, moto_endpoint: str, bucket: str) -> tuple[Settings, Settings]:
    """Two hosts: separate local disks, one bucket."""
    return _settings(tmp_path, moto_endpoint, bucket, "host-a"), _settings(tmp_path, moto_endpoint, bucket, "host-b")


def _manifest(variant: str) -> VariantManifest:
    return VariantManifest(family="fam", variant=variant, runtime="torch", precision="fp32", base_model_id="tiny",
                           technique=Technique(name="finetune"), labels={0: "negative", 1: "positive"},
                           num_parameters=123)


def _publish(store: VariantStore, variant: str, payload: bytes = b"weights", **kw: object) -> VariantManifest:
    with store.staging("fam", variant) as staged:
        (staged / "model.bin").write_bytes(payload)
        (staged / "tok").mkdir()
        (staged / "tok" / "vocab.txt").write_text("[PAD]\n")
        return store.publish(staged, _manifest(variant), **kw)  # type: ignore[arg-type]


def _pointer(endpoint: str, bucket: str, key: str) -> dict[str, object]:
    body = raw_client(endpoint).get_object(Bucket=bucket, Key=f"team/{key}")["Body"].read()
    return json.loads(body)


def test_the_url_chooses_the_backend_and_the_local_store_stays_the_default(tmp_path: Path,
                                                                          hosts: tuple[Settings, Settings]) -> None:
    local = Settings(store_dir=tmp_path / "plain", _env_file=None)  # type: ignore[call-arg]
    assert local.store_url is None
    assert type(open_variant_store(local)) is VariantStore and type(open_dataset_store(local)) is DatasetStore
    assert isinstance(open_job_store(local).blobs, LocalBlobs)
    a, _ = hosts
    assert isinstance(open_variant_store(a), BucketVariantStore)
    assert isinstance(open_dataset_store(a), BucketDatasetStore)
    assert not isinstance(open_job_store(a).blobs, LocalBlobs)
    assert Settings(store_url="", _env_file=None).store_url is None  # type: ignore[call-arg]  # compose's unset
    for bad in ("s3://", "s3://Upper/x", "https://bucket/x", "s3://bucket/a/../b", "s3://bucket//x"):
        with pytest.raises(ValueError):
            Settings(store_url=bad, _env_file=None)  # type: ignore[call-arg]


def test_a_variant_published_on_one_host_is_read_verified_and_cached_on_another(
        hosts: tuple[Settings, Settings], moto_endpoint: str, bucket: str) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    published = _publish(a, "baseline-fp32")
    assert (hosts[0].store_dir / "fam" / "baseline-fp32" / "model.bin").read_bytes() == b"weights"  # a's cache
    assert not (hosts[1].store_dir / "fam").exists()
    assert b.families() == ["fam"] and [m.variant for m in b.manifests()] == ["baseline-fp32"]
    assert b.manifest("fam", "baseline-fp32") == published
    folder = b.variant_dir("fam", "baseline-fp32")
    assert folder == hosts[1].store_dir / "fam" / "baseline-fp32"
    assert (folder / "model.bin").read_bytes() == b"weights" and (folder / "tok" / "vocab.txt").is_file()
    b.verify(published)
    inode = (folder / "model.bin").stat().st_ino
    assert b.variant_dir("fam", "baseline-fp32") == folder and (folder / "model.bin").stat().st_ino == inode  # reused
    # The bucket's layout: the pointer names a prefix of its own, with every file's sha256.
    pointer = _pointer(moto_endpoint, bucket, "variants/fam/baseline-fp32.json")
    assert pointer["files"] == published.files and str(pointer["location"]).startswith("fam/baseline-fp32/")
    staging = hosts[1].store_dir / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_a_corrupted_object_is_refused_and_never_cached(hosts: tuple[Settings, Settings], moto_endpoint: str,
                                                        bucket: str) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    _publish(a, "baseline-fp32")
    location = _pointer(moto_endpoint, bucket, "variants/fam/baseline-fp32.json")["location"]
    raw_client(moto_endpoint).put_object(Bucket=bucket, Key=f"team/objects/variants/{location}/model.bin",
                                         Body=b"tampered")
    with pytest.raises(StoreError, match="sha256"):
        b.variant_dir("fam", "baseline-fp32")
    assert not (hosts[1].store_dir / "fam" / "baseline-fp32").exists()
    assert not any((hosts[1].store_dir / ".staging").iterdir())


def test_a_half_published_variant_is_invisible(hosts: tuple[Settings, Settings], moto_endpoint: str,
                                               bucket: str) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])

    def crash() -> None:
        raise RuntimeError("host died after the upload")

    with pytest.raises(RuntimeError):
        _publish(a, "pruned-fp32", before_rename=crash)
    keys = [o["Key"] for o in raw_client(moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("/model.bin") for k in keys)  # the files went up ...
    assert not any(k.startswith("team/variants/") for k in keys)  # ... but no manifest names them
    assert b.families() == [] and b.manifests() == [] and a.manifests() == []
    with pytest.raises(VariantNotFound):
        b.variant_dir("fam", "pruned-fp32")
    assert b.manifest_version("fam", "pruned-fp32") is None


def test_a_republish_swaps_in_a_new_prefix_and_caches_follow(hosts: tuple[Settings, Settings],
                                                             moto_endpoint: str, bucket: str) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    first = _publish(a, "v1", b"old")
    assert (b.variant_dir("fam", "v1") / "model.bin").read_bytes() == b"old"
    version = b.manifest_version("fam", "v1")
    old_location = _pointer(moto_endpoint, bucket, "variants/fam/v1.json")["location"]
    second = _publish(a, "v1", b"newer")
    assert _pointer(moto_endpoint, bucket, "variants/fam/v1.json")["location"] != old_location
    assert b.manifest("fam", "v1") == second != first
    assert b.manifest_version("fam", "v1") != version
    assert (b.variant_dir("fam", "v1") / "model.bin").read_bytes() == b"newer"
    b.verify(second)
    # The old files stay where a reader that read the old manifest may still be fetching them.
    old = raw_client(moto_endpoint).get_object(Bucket=bucket, Key=f"team/objects/variants/{old_location}/model.bin")
    assert old["Body"].read() == b"old"


def test_a_damaged_cached_copy_is_fetched_again(hosts: tuple[Settings, Settings]) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    published = _publish(a, "baseline-fp32")
    (b.variant_dir("fam", "baseline-fp32") / "model.bin").write_bytes(b"bit rot")
    b.verify(published)  # the bucket holds the truth
    assert (hosts[1].store_dir / "fam" / "baseline-fp32" / "model.bin").read_bytes() == b"weights"


def test_unknown_variant_lists_what_the_bucket_holds(hosts: tuple[Settings, Settings]) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    _publish(a, "baseline-fp32")
    with pytest.raises(VariantNotFound) as info:
        b.manifest("fam", "nope")
    assert "baseline-fp32" in info.value.hint
    assert b.newest_family() == "fam"
    assert [name for name, _ in b.manifest_versions("fam")] == ["baseline-fp32"]


def test_the_serving_catalog_follows_the_bucket_within_the_refresh_time(hosts: tuple[Settings, Settings]) -> None:
    a = open_variant_store(hosts[0])
    _publish(a, "v1", b"old")
    catalog = Catalog(open_variant_store(hosts[1]))
    first = catalog.manifest("fam", "v1")
    reads = catalog.reads
    assert catalog.manifest("fam", "v1") == first and catalog.reads == reads  # cached under its ETag
    second = _publish(a, "v1", b"newer")
    assert catalog.manifest("fam", "v1") == second and catalog.reads == reads + 1  # refresh_s=0: seen at once
    lazy = Catalog(BucketVariantStore(hosts[1].store_dir, open_variant_store(hosts[1]).bucket, refresh_s=3600))
    assert lazy.manifest("fam", "v1") == second
    third = _publish(a, "v1", b"newest")
    assert lazy.manifest("fam", "v1") == second  # within the refresh time: the listing is reused ...
    _publish(a, "v2")
    assert lazy.manifest("fam", "v2").variant == "v2"  # ... but a name not seen yet is looked up at once
    assert lazy.manifest("fam", "v1") == third  # and that look refreshed the others


def test_benchmark_runs_are_shared_and_never_overwritten(hosts: tuple[Settings, Settings]) -> None:
    a, b = open_variant_store(hosts[0]), open_variant_store(hosts[1])
    _publish(a, "baseline-fp32")
    where = a.save_report("fam", "run-1", {"run_id": "run-1", "created_at": "2026-01-01T00:00:00"})
    assert where.startswith("s3://") and where.endswith("/variants/fam/.reports/run-1.json")
    a.save_report("fam", "run-2", {"run_id": "run-2", "kind": "autotune", "created_at": "2026-01-02T00:00:00"})
    assert [r["run_id"] for r in b.reports("fam")] == ["run-1", "run-2"]
    assert b.latest_report("fam")["run_id"] == "run-1"  # type: ignore[index]
    assert b.latest_report("fam", kind="autotune")["run_id"] == "run-2"  # type: ignore[index]
    assert b.report_names("fam") == {"run-1.json", "run-2.json"}
    with pytest.raises(StoreError, match="already exists"):
        b.save_report("fam", "run-1", {"run_id": "run-1"})
    assert b.families() == ["fam"]  # runs are no variants


def test_job_records_markers_and_keys_are_shared(hosts: tuple[Settings, Settings]) -> None:
    api, worker = open_job_store(hosts[0]), open_job_store(hosts[1])
    rec = api.save(JobRecord(id=api.new_id(), request={"preset": "tiny"}))
    worker.update(rec.id, state="running", stage="finetune", progress=40.0)
    again = api.get(rec.id)
    assert (again.state, again.stage, again.progress) == ("running", "finetune", 40.0)
    other = api.save(JobRecord(id=api.new_id()))
    assert {r.id for r in worker.list()} == {rec.id, other.id} and len(worker.list(limit=1)) == 1
    worker.raise_if_cancelled(rec.id)
    api.request_cancel(rec.id)
    with pytest.raises(JobCancelled):
        worker.raise_if_cancelled(rec.id)
    assert not worker.cancel_requested(other.id)
    api.remember_idempotency_key("retry-1", rec.id, request="fingerprint-1")
    found = worker.find_by_idempotency_key("retry-1", request="fingerprint-1")
    assert found is not None and found.id == rec.id
    with pytest.raises(Conflict):
        worker.find_by_idempotency_key("retry-1", request="another request")
    assert worker.find_by_idempotency_key("never-used") is None
    assert {r.id for r in worker.list()} == {rec.id, other.id}  # markers are no records
    for bad in ("../x", "a/b", "x" * 100, "nope"):
        with pytest.raises(JobNotFound):
            worker.get(bad)


def _raw_tickets(tmp_path: Path, name: str = "tickets.csv") -> RawDataset:
    rows = [(f"ticket {y} {i}", y) for y, n in {"billing": 30, "login": 30}.items() for i in range(n)]
    path = tmp_path / name
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    return open_inputs({"all": path}, source="upload", max_mb=10)


def test_datasets_are_shared_immutable_and_checked(hosts: tuple[Settings, Settings], tmp_path: Path,
                                                   moto_endpoint: str, bucket: str) -> None:
    cols = ColumnMapping(text_column="text", label_column="label")
    a, b = open_dataset_store(hosts[0]), open_dataset_store(hosts[1])
    made = a.create("tickets", _raw_tickets(tmp_path), cols)
    assert b.names() == ["tickets"] and b.get("tickets") == made and [m.name for m in b.list()] == ["tickets"]
    train = b.load("tickets")["train"]
    assert train.source == "dataset:tickets" and len(train) == 60
    assert (hosts[1].dataset_dir / "tickets" / "train.jsonl").is_file()  # b's cache
    with pytest.raises(Conflict):
        b.check_new("tickets")
    with pytest.raises(Conflict):
        b.create("tickets", _raw_tickets(tmp_path, "again.csv"), cols)
    # A damaged object is refused on a host whose cache is empty.
    location = _pointer(moto_endpoint, bucket, "datasets/tickets.json")["location"]
    raw_client(moto_endpoint).put_object(Bucket=bucket, Key=f"team/objects/datasets/{location}/train.jsonl",
                                         Body=b'{"text": "x", "label": "billing"}\n')
    c = open_dataset_store(_settings(tmp_path, moto_endpoint, bucket, "host-c"))
    with pytest.raises(StoreError, match="sha256"):
        c.load("tickets")
    with pytest.raises(Conflict):
        b.delete("tickets", used_by=["fam/baseline-fp32"])
    b.delete("tickets", used_by=[])
    assert a.names() == [] and not (hosts[1].dataset_dir / "tickets").exists()
    with pytest.raises(DatasetNotFound):
        a.get("tickets")
    left = raw_client(moto_endpoint).list_objects_v2(Bucket=bucket, Prefix="team/objects/datasets/").get("Contents")
    assert not left  # a deleted dataset's files go too


def test_a_half_created_dataset_is_invisible(hosts: tuple[Settings, Settings], tmp_path: Path) -> None:
    a, b = open_dataset_store(hosts[0]), open_dataset_store(hosts[1])

    def crash() -> None:
        raise RuntimeError("died")

    with pytest.raises(RuntimeError):
        a.create("tickets", _raw_tickets(tmp_path), ColumnMapping(text_column="text", label_column="label"),
                 before_rename=crash)
    assert b.names() == [] and a.names() == []


def test_readiness_needs_the_bucket(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    assert open_variant_store(_settings(tmp_path, moto_endpoint, bucket, "ok")).writable()
    missing = _settings(tmp_path, moto_endpoint, "no-such-bucket-here", "missing")
    assert not open_variant_store(missing).writable()
    with pytest.raises(StoreError, match="no-such-bucket-here"):
        open_job_store(missing).get("abc123")


def test_the_local_job_store_is_unchanged_on_disk(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs")
    rec = jobs.save(JobRecord(id=jobs.new_id()))
    jobs.request_cancel(rec.id)
    jobs.remember_idempotency_key("k", rec.id)
    names = sorted(p.relative_to(tmp_path / "jobs").as_posix() for p in (tmp_path / "jobs").rglob("*") if p.is_file())
    assert names[:2] == [f"{rec.id}.cancel", f"{rec.id}.json"] and names[2].startswith("idempotency/")
