"""The dataset store (atomic, immutable, shared modes, refusing deletes in use), job splits, and
resolving datasets named by path or by a cached hub id, without the network."""

from __future__ import annotations

import socket
import stat
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from slimbert.config import Settings
from slimbert.data import TextDataset
from slimbert.datasets import ColumnMapping, DatasetStore, RawDataset, job_splits, load_hub, open_inputs, resolve_path
from slimbert.datasets.store import STAGING
from slimbert.errors import Conflict, DatasetInvalid, DatasetNotFound, DatasetUnavailable, InvalidInput

COLS = ColumnMapping(text_column="text", label_column="label")
CLASSES = {"billing issue": 40, "login": 30, "shipping": 20, "refund": 8, "other": 2}


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    return path


def _tickets(n_per_class: dict[str, int] = CLASSES) -> list[tuple[str, str]]:
    return [(f"ticket {y} {i}", y) for y, n in n_per_class.items() for i in range(n)]


def _raw(tmp_path: Path, rows: list[tuple[str, str]] | None = None, name: str = "tickets.csv") -> RawDataset:
    return open_inputs({"all": _csv(tmp_path / name, rows or _tickets())}, source="upload", max_mb=10)


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "datasets")


def test_create_list_get_load_round_trip(tmp_path: Path, store: DatasetStore) -> None:
    manifest = store.create("tickets", _raw(tmp_path), COLS)
    assert manifest.label_names == sorted(CLASSES) and manifest.task == "single"
    assert manifest.splits["train"].rows == 100 and manifest.splits["train"].labels["other"] == 2
    assert manifest.splits_given == ["train"] and manifest.lengths_in == "whitespace tokens"
    assert manifest.splits["train"].lengths.max == 4  # "ticket billing issue 39": whitespace tokens
    assert [(f.name, f.split, f.bytes) for f in manifest.files] == [
        ("tickets.csv", "all", (tmp_path / "tickets.csv").stat().st_size)]
    assert [m.name for m in store.list()] == ["tickets"] and store.get("tickets") == manifest
    train = store.load("tickets")["train"]
    assert train.source == "dataset:tickets" and train.label_names == tuple(sorted(CLASSES))
    assert Counter(train.label_names[y] for y in train.labels) == CLASSES
    folder = store.root / "tickets"
    assert (folder / "files" / "tickets.csv").read_bytes() == (tmp_path / "tickets.csv").read_bytes()
    for p in [folder, *folder.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o775 if p.is_dir() else 0o664), p


def test_sha256_is_stable_for_identical_content(tmp_path: Path, store: DatasetStore) -> None:
    a = store.create("a", _raw(tmp_path), COLS)
    b = store.create("b", _raw(tmp_path, name="copy.csv"), COLS)
    c = store.create("c", _raw(tmp_path, _tickets() + [("one more", "login")], name="more.csv"), COLS)
    assert a.sha256 == b.sha256 != c.sha256


def test_token_lengths_with_a_models_tokenizer(tmp_path: Path, store: DatasetStore, tiny_model_dir: Path) -> None:
    manifest = store.create("tok", _raw(tmp_path), COLS, tokenizer_path=str(tiny_model_dir), tokenizer_label="tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    expected = max(len(tokenizer(t)["input_ids"]) for t, _ in _tickets())
    assert manifest.lengths_in == "tokens of tiny" and manifest.splits["train"].lengths.max == expected


def test_a_failure_before_the_rename_leaves_nothing(tmp_path: Path, store: DatasetStore) -> None:
    def crash() -> None:
        assert any((store.root / STAGING).iterdir())  # everything was written in staging
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        store.create("tickets", _raw(tmp_path), COLS, before_rename=crash)
    assert store.list() == [] and not (store.root / "tickets").exists()
    assert list((store.root / STAGING).iterdir()) == []
    with pytest.raises(DatasetInvalid):  # invalid data: refused mid-build, no debris either
        store.create("bad", _raw(tmp_path, [("a", "x"), ("b", "x")]), COLS)
    assert list((store.root / STAGING).iterdir()) == [] and store.names() == []


def test_immutable_names_and_invalid_names(tmp_path: Path, store: DatasetStore) -> None:
    first = store.create("tickets", _raw(tmp_path), COLS)
    with pytest.raises(Conflict) as err:
        store.create("tickets", _raw(tmp_path, _tickets({"a": 3, "b": 3}), name="other.csv"), COLS)
    assert err.value.status_code == 409 and "another name" in err.value.hint
    assert store.get("tickets") == first
    with pytest.raises(InvalidInput):
        store.create("../escape", _raw(tmp_path), COLS)


def test_delete_is_refused_while_variants_use_it(tmp_path: Path, store: DatasetStore) -> None:
    store.create("tickets", _raw(tmp_path), COLS)
    store.create("keep", _raw(tmp_path), COLS)
    with pytest.raises(Conflict) as err:
        store.delete("tickets", used_by=["fam/baseline-fp32", "fam/pruned-int8"])
    assert "fam/baseline-fp32" in str(err.value) and "fam/pruned-int8" in str(err.value)
    assert store.names() == ["keep", "tickets"]
    store.delete("tickets", used_by=[])
    assert store.names() == ["keep"]
    with pytest.raises(DatasetNotFound) as missing:
        store.get("tickets")
    assert "keep" in missing.value.hint


def test_pair_task_round_trip(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "train.tsv").write_text("a\tb\ty\nx1\tx2\t1\ny1\ty2\t0\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("a\tb\ty\nz1\tz2\t1\n", encoding="utf-8")
    raw = open_inputs({"train": tmp_path / "train.tsv", "test": tmp_path / "test.tsv"}, source="upload", max_mb=1)
    manifest = store.create("pairs", raw, ColumnMapping(text_column="a", text_pair_column="b", label_column="y"))
    assert manifest.task == "pair" and manifest.splits_given == ["train", "test"]
    loaded = store.load("pairs")
    assert loaded["test"].inputs == [("z1", "z2")] and loaded["test"].labels == [1]
    assert loaded["train"].label_names == loaded["test"].label_names == ("0", "1")


# --- job splits ------------------------------------------------------------------------------------

def _data(counts: dict[str, int], source: str = "t") -> TextDataset:
    names = tuple(sorted(counts))
    rows = [(f"{y} {i}", names.index(y)) for y, n in counts.items() for i in range(n)]
    return TextDataset([t for t, _ in rows], [y for _, y in rows], source, label_names=names)


def _texts(d: TextDataset) -> set[str]:
    return set(d.texts)


def test_train_alone_carves_test_then_validation_stratified() -> None:
    counts = {"a": 500, "b": 300, "c": 200}
    splits = job_splits({"train": _data(counts)}, validation_examples=None, test_examples=None, seed=0, name="d")
    assert len(splits.test) == 100 and len(splits.validation) == 90 and len(splits.train) == 810
    assert Counter(splits.test.labels) == {0: 50, 1: 30, 2: 20}  # each label's share kept
    assert Counter(splits.validation.labels) == {0: 45, 1: 27, 2: 18}
    parts = [_texts(splits.train), _texts(splits.validation), _texts(splits.test)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 1000  # no overlap, nothing lost
    assert splits.how["test"] == "100 of d train, stratified by label, seed 0"
    assert splits.how["train"] == "d train minus test and validation (810 left)"
    assert all(s.label_names == ("a", "b", "c") for s in (splits.train, splits.validation, splits.test))


def test_carving_is_seeded() -> None:
    stored = {"train": _data({"a": 60, "b": 40})}

    def run(seed: int) -> list[set[str]]:
        s = job_splits(stored, validation_examples=10, test_examples=20, seed=seed, name="d")
        return [_texts(s.train), _texts(s.validation), _texts(s.test)]

    assert run(3) == run(3) and run(3) != run(4)
    assert [len(p) for p in run(3)] == [70, 10, 20]


def test_given_splits_are_used_as_is() -> None:
    train, validation, test = _data({"a": 30, "b": 30}), _data({"a": 5, "b": 4}, "v"), _data({"a": 50, "b": 50}, "x")
    splits = job_splits({"train": train, "validation": validation, "test": test}, validation_examples=3,
                        test_examples=None, seed=0, name="d")
    assert splits.train is train and splits.validation is validation and splits.test is test
    assert splits.how["validation"] == "d validation as given (9)" and splits.how["train"] == "d train as given (60)"
    sub = job_splits({"train": train, "test": test}, validation_examples=None, test_examples=10, seed=0, name="d")
    assert len(sub.test) == 10 and _texts(sub.test) <= _texts(test) and "10-example subset" in sub.how["test"]
    assert _texts(sub.validation) <= _texts(train) and not _texts(sub.validation) & _texts(sub.train)
    assert len(sub.validation) == 6 and sub.how["train"] == "d train minus validation (54 left)"


def test_every_class_stays_in_train_and_rare_ones_reach_validation() -> None:
    stored = {"train": _data({"big": 300, "rare": 2, "single": 1}), "test": _data({"big": 5, "rare": 1}, "x")}
    splits = job_splits(stored, validation_examples=None, test_examples=None, seed=0, name="d")
    names = splits.train.label_names
    assert {names[y] for y in splits.train.labels} == {"big", "rare", "single"}
    assert {names[y] for y in splits.validation.labels} == {"big", "rare"}  # topped up: 1 of the 2 rare ones


def test_too_little_training_data_is_refused() -> None:
    with pytest.raises(DatasetInvalid) as err:
        job_splits({"train": _data({"a": 1, "b": 1})}, validation_examples=None, test_examples=None, seed=0,
                   name="d")
    assert "test" in str(err.value) and "give a test file" in err.value.hint


# --- resolving paths and hub ids -------------------------------------------------------------------

def _settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", allowed_data_roots=[tmp_path / "data"],
                    _env_file=None)  # type: ignore[call-arg]


def test_path_must_lie_under_the_allowed_roots(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (tmp_path / "data").mkdir()
    outside = _csv(tmp_path / "outside.csv", _tickets())
    with pytest.raises(DatasetUnavailable) as err:
        resolve_path(str(outside), settings)
    assert str(tmp_path / "data") in err.value.hint and "SLIMBERT_ALLOWED_DATA_ROOTS" in err.value.hint
    (tmp_path / "data" / "link.csv").symlink_to(outside)  # a link out of the root is outside too
    with pytest.raises(DatasetUnavailable):
        resolve_path(str(tmp_path / "data" / "link.csv"), settings)


def test_a_folder_of_split_files(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "trec"
    folder.mkdir(parents=True)
    _csv(folder / "train.csv", _tickets())
    _csv(folder / "dev.csv", _tickets({"login": 2, "other": 1}))
    _csv(folder / "test.csv", _tickets({"login": 3}))
    (folder / "README.md").write_text("ignored")
    raw = resolve_path(str(folder), _settings(tmp_path))
    assert set(raw.tables) == {"train", "validation", "test"} and raw.source == f"path:{folder}"
    _csv(folder / "test.jsonl", [])
    with pytest.raises(DatasetInvalid, match="2 files for the test split"):
        resolve_path(str(folder), _settings(tmp_path))


def test_an_uncached_hub_dataset_is_a_422_and_never_reaches_the_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DatasetUnavailable) as err:
        load_hub("glue", "mrpc", _settings(tmp_path))
    assert "glue/mrpc" in str(err.value) and "upload the files" in err.value.hint
    for bad in ("/etc", "../x", "a/b/c"):
        with pytest.raises(DatasetUnavailable, match="invalid hub dataset id"):
            load_hub(bad, None, _settings(tmp_path))
