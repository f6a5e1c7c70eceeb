"""Reading users' files (BOM, raw quotes, quoted commas, JSON lines, Parquet, save_to_disk) and the
checks that refuse unusable data, each naming the file, the row and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slimbert.datasets import BuiltSplits, ColumnMapping, build_splits, open_inputs, order_labels, read_file, read_saved
from slimbert.datasets.build import MAX_LABELS
from slimbert.errors import DatasetInvalid

MRPC = Path(__file__).resolve().parents[3] / "shared" / "data" / "mrpc" / "train.tsv"
COLS = ColumnMapping(text_column="text", label_column="label")


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _built(tmp_path: Path, files: dict[str, tuple[str, str]], columns: ColumnMapping = COLS) -> BuiltSplits:
    paths = {role: _write(tmp_path / name, body) for role, (name, body) in files.items()}
    return build_splits(open_inputs(paths, source="upload", max_mb=10).tables, columns)


def test_bom_tsv_with_raw_quotes_is_read_without_quote_processing(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", '\ufeffQuality\t#1 String\t#2 String\n'
                  '1\tHe said "hi\tShe said "hi" too\n0\t"Quoted" start\tno quotes\n')
    table = read_file(path)
    assert table.columns == ["Quality", "#1 String", "#2 String"]  # the BOM is not part of the first name
    assert [r["#1 String"] for r in table.rows] == ['He said "hi', '"Quoted" start']
    assert table.numbers == [2, 3]


def test_csv_with_quoted_commas_multiline_fields_and_labels_with_spaces(tmp_path: Path) -> None:
    body = ('text,label\n"my card, the blue one, was charged twice", billing issue \n'
            '"line one\nline two",Other\n\nplain text,billing issue\n')
    built = _built(tmp_path, {"all": ("tickets.csv", body)})
    train = built.splits["train"]
    assert [e.text for e in train] == ["my card, the blue one, was charged twice", "line one\nline two", "plain text"]
    assert [e.row for e in train] == [2, 3, 6]  # the line where each row starts, header = line 1
    assert built.label_names == ["Other", "billing issue"]  # stripped, lexicographic


def test_jsonl_and_json_array_with_integer_labels(tmp_path: Path) -> None:
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": 1}]
    jsonl = _write(tmp_path / "d.jsonl", json.dumps(lines[0]) + "\n\n" + "\n".join(map(json.dumps, lines[1:])))
    table = read_file(jsonl)
    assert [r["text"] for r in table.rows] == ["a", "b", "c"] and table.numbers == [1, 3, 4]
    array = read_file(_write(tmp_path / "d.json", json.dumps(lines)))
    assert array.rows == lines and array.numbers == [1, 2, 3]


def test_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.table({"sentence": ["x y", "z"], "label": [3, 10]}), tmp_path / "d.parquet")
    table = read_file(tmp_path / "d.parquet")
    assert table.columns == ["sentence", "label"] and table.rows[1] == {"sentence": "z", "label": 10}
    built = build_splits({"all": table}, ColumnMapping(text_column="sentence", label_column="label"))
    assert built.label_names == ["3", "10"]  # numeric order, not "10" < "3"


def test_save_to_disk_dataset_dict_with_class_labels(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    DatasetDict({
        "train": Dataset.from_dict({"text": ["good", "bad", "fine"], "label": [1, 0, 1]}, features=features),
        "dev": Dataset.from_dict({"text": ["great"], "label": [1]}, features=features),
    }).save_to_disk(str(tmp_path / "saved"))
    tables = read_saved(tmp_path / "saved")
    assert set(tables) == {"train", "validation"}  # "dev" is the validation split
    built = build_splits(tables, COLS)
    assert built.label_names == ["neg", "pos"]  # ClassLabel ids become their names
    assert built.dataset("validation", "x").label_names == ("neg", "pos")


def test_not_utf8_names_the_file_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\nfine,a\ncaf\xe9 au lait,b\n")
    with pytest.raises(DatasetInvalid) as err:
        read_file(path)
    assert (err.value.file, err.value.row) == ("latin1.csv", 3)
    assert "latin1.csv" in str(err.value) and "row 3" in str(err.value) and "UTF-8" in err.value.hint


def test_unknown_suffix_lists_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(DatasetInvalid) as err:
        read_file(_write(tmp_path / "data.xlsx", "x"))
    assert err.value.status_code == 422 and ".xlsx" in str(err.value)
    assert all(s in err.value.hint for s in (".csv", ".tsv", ".jsonl", ".parquet", "save_to_disk"))


def test_a_row_with_too_many_fields_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetInvalid) as err:
        read_file(_write(tmp_path / "d.csv", "text,label\nok,a\nunquoted, comma,b\n"))
    assert err.value.row == 3 and "quote" in err.value.hint


def test_size_limit_is_checked_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"\xff" * 1_100_000)  # unparseable: a parse would fail with a UTF-8 error instead
    with pytest.raises(DatasetInvalid) as err:
        open_inputs({"all": path}, source="upload", max_mb=1)
    assert err.value.file == "big.csv" and "1 MB limit" in str(err.value)
    assert "SLIMBERT_MAX_DATASET_MB" in err.value.hint


@pytest.mark.parametrize(("files", "columns", "where", "message"), [
    ({"all": ("d.csv", "sentence,label\na,x\n")}, COLS, ("d.csv", None, "text"), "'sentence', 'label'"),
    ({"all": ("d.csv", "text,label\na,x\n ,y\n")}, COLS, ("d.csv", 3, "text"), "empty text"),
    ({"all": ("d.tsv", "text\tpair\tlabel\na\tb\tx\nc\t\ty\n")},
     ColumnMapping(text_column="text", text_pair_column="pair", label_column="label"), ("d.tsv", 3, "pair"),
     "empty text"),
    ({"all": ("d.csv", "text,label\na,x\nb,\n")}, COLS, ("d.csv", 3, "label"), "empty label"),
    ({"all": ("d.csv", "text,label\na,x\nb,x\n")}, COLS, ("d.csv", None, "label"), "one class"),
    ({"train": ("tr.csv", "text,label\na,x\nb,y\n"), "test": ("te.csv", "text,label\nc,x\nd,z\n")}, COLS,
     ("te.csv", 3, "label"), "'z'"),
    ({"all": ("d.csv", "text,label,split\na,x,train\nb,y,train\nc,z,test\n")},
     ColumnMapping(text_column="text", label_column="label", split_column="split"), ("d.csv", 4, "label"), "'z'"),
    ({"all": ("d.csv", "text,label,split\na,x,train\nb,y,holdout\n")},
     ColumnMapping(text_column="text", label_column="label", split_column="split"), ("d.csv", 3, "split"),
     "holdout"),
    ({"all": ("d.csv", "text,label\n" + "".join(f"t{i},l{i}\n" for i in range(MAX_LABELS + 1)))}, COLS,
     ("d.csv", None, "label"), "more than 100"),
])
def test_each_refusal_names_file_row_and_column(tmp_path: Path, files: dict[str, tuple[str, str]],
                                                columns: ColumnMapping, where: tuple[str, int | None, str],
                                                message: str) -> None:
    with pytest.raises(DatasetInvalid) as err:
        _built(tmp_path, files, columns)
    assert err.value.status_code == 422 and err.value.hint
    assert (err.value.file, err.value.row, err.value.column) == where
    assert message in str(err.value)
    assert f"file {where[0]}" in str(err.value) and f"column {where[2]}" in str(err.value)


def test_split_column_and_label_ids(tmp_path: Path) -> None:
    body = "text,label,split\na,10,train\nb,2,train\nc,1,Validation\nd,2,test\ne,1,train\n"
    built = _built(tmp_path, {"all": ("d.csv", body)},
                   ColumnMapping(text_column="text", label_column="label", split_column="split"))
    assert built.given == ["train", "validation", "test"]
    assert built.label_names == ["1", "2", "10"]
    train = built.dataset("train", "t")
    assert train.labels == [2, 1, 0] and train.label_names == ("1", "2", "10")
    assert order_labels({"b", "A", "a c"}) == ["A", "a c", "b"]
    assert order_labels({"-1", "1", "0"}) == ["-1", "0", "1"]


def test_every_split_carries_pairs_and_label_names(tmp_path: Path) -> None:
    files = {"train": ("train.tsv", "s1\ts2\ty\na\tb\tyes\nc\td\tno\n"), "test": ("test.tsv", "s1\ts2\ty\ne\tf\tno\n")}
    built = _built(tmp_path, files, ColumnMapping(text_column="s1", text_pair_column="s2", label_column="y"))
    for split in ("train", "test"):
        data = built.dataset(split, "x")
        assert data.label_names == ("no", "yes") and data.pairs is not None
    assert built.dataset("test", "x").inputs == [("e", "f")]


@pytest.mark.skipif(not MRPC.is_file(), reason="GLUE MRPC is not in ../shared/data")
def test_real_mrpc_train() -> None:
    raw = open_inputs({"all": MRPC}, source="path", max_mb=10)
    built = build_splits(raw.tables, ColumnMapping(text_column="#1 String", text_pair_column="#2 String",
                                                   label_column="Quality"))
    train = built.dataset("train", "mrpc")
    assert len(train) == 3668 and built.label_names == ["0", "1"]
    assert train.pairs is not None and len(train.pairs) == 3668
    assert train.labels.count(1) == 2474
