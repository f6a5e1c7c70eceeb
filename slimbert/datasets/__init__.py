"""Datasets as stored objects: read a user's files, check them, store them immutably, split them for a job.

``read`` turns files into tables, ``build`` checks them against a column mapping, ``store`` keeps them
(staging + one rename; ``bucket``: in a bucket), ``splits`` makes a job's train/validation/test,
``resolve`` finds datasets named by a path or a cached hub id.
"""

from slimbert.datasets.bucket import open_dataset_store
from slimbert.datasets.build import MAX_LABELS, BuiltSplits, build_splits, order_labels
from slimbert.datasets.manifest import (
    DATASET_MANIFEST,
    ColumnMapping,
    DatasetFile,
    DatasetManifest,
    LengthStats,
    SplitStats,
)
from slimbert.datasets.read import ACCEPTED, RawDataset, Table, open_inputs, read_file, read_saved
from slimbert.datasets.resolve import load_hub, resolve_path
from slimbert.datasets.splits import job_splits
from slimbert.datasets.store import DatasetStore

__all__ = [
    "ACCEPTED", "DATASET_MANIFEST", "MAX_LABELS", "BuiltSplits", "ColumnMapping", "DatasetFile", "DatasetManifest",
    "DatasetStore", "LengthStats", "RawDataset", "SplitStats", "Table", "build_splits", "job_splits", "load_hub",
    "open_dataset_store", "open_inputs", "order_labels", "read_file", "read_saved", "resolve_path",
]
