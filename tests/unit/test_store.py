from __future__ import annotations

from pathlib import Path

import pytest

from slimbert.errors import SlimBertError, StoreError, VariantNotFound
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore


def _manifest(variant: str = "baseline-fp32") -> VariantManifest:
    return VariantManifest(
        family="fam", variant=variant, runtime="torch", precision="fp32", base_model_id="tiny",
        technique=Technique(name="finetune", params={"epochs": 1}), labels={0: "negative", 1: "positive"},
        num_parameters=123, test_accuracy=0.5, recipe={"a": {"b": [1, 2]}},
    )


def _publish(store: VariantStore, variant: str, payload: bytes = b"weights") -> VariantManifest:
    with store.staging("fam", variant) as staged:
        (staged / "model.bin").write_bytes(payload)
        (staged / "sub").mkdir()
        (staged / "sub" / "tok.json").write_text("{}")
        return store.publish(staged, _manifest(variant))


def test_publish_hashes_files_and_round_trips_manifest(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)
    published = _publish(store, "baseline-fp32")
    loaded = store.manifest("fam", "baseline-fp32")
    assert loaded == published
    assert set(loaded.files) == {"model.bin", "sub/tok.json"}
    assert loaded.size_bytes == len(b"weights") + 2
    assert loaded.recipe == {"a": {"b": [1, 2]}}
    assert loaded.labels == {0: "negative", 1: "positive"}
    store.verify(loaded)
    assert [m.variant for m in store.manifests()] == ["baseline-fp32"]
    assert not list((tmp_path / ".staging").iterdir())


def test_failure_before_rename_leaves_no_variant(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)

    def crash() -> None:
        raise RuntimeError("disk died")

    with pytest.raises(RuntimeError), store.staging("fam", "pruned-fp32") as staged:
        (staged / "model.bin").write_bytes(b"half")
        store.publish(staged, _manifest("pruned-fp32"), before_rename=crash)
    assert not (tmp_path / "fam" / "pruned-fp32").exists()
    assert store.manifests() == []
    assert not list((tmp_path / ".staging").iterdir())


def test_republish_replaces_whole_variant(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)
    _publish(store, "v1", b"old")
    second = _publish(store, "v1", b"newer")
    assert (tmp_path / "fam" / "v1" / "model.bin").read_bytes() == b"newer"
    assert store.manifest("fam", "v1").files == second.files


def test_corrupted_file_is_detected(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)
    manifest = _publish(store, "v1")
    (tmp_path / "fam" / "v1" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupted"):
        store.verify(manifest)


def test_unknown_variant_lists_what_exists(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)
    _publish(store, "baseline-fp32")
    with pytest.raises(VariantNotFound) as err:
        store.manifest("fam", "nope")
    assert "baseline-fp32" in err.value.hint


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", ".hidden", "x" * 65])
def test_names_that_could_escape_the_store_are_refused(tmp_path: Path, name: str) -> None:
    store = VariantStore(tmp_path)
    with pytest.raises(SlimBertError):
        store.variant_dir("fam", name)


def test_free_space_check_refuses_before_writing(tmp_path: Path) -> None:
    store = VariantStore(tmp_path, min_free_mb=10**12)
    with pytest.raises(StoreError, match="MB free"), store.staging("fam", "v1"):
        pass


def test_clean_staging_removes_only_old_debris(tmp_path: Path) -> None:
    import os
    import time

    store = VariantStore(tmp_path)
    old = tmp_path / ".staging" / "fam--v1--dead"
    fresh = tmp_path / ".staging" / "fam--v2--running"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "model.bin").write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert store.clean_staging(older_than_s=600) == 1
    assert not old.exists() and fresh.exists()  # another worker's job in progress stays
