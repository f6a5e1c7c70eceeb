"""Classifying many texts fast: length bucketing so each batch pads only to its own longest text.

SST-2 sentences average about 25 tokens; padding them all to 128 spends most of the compute on
padding. Sorting by length first makes neighbours in a batch about the same length.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimbert.data import Text, text_length
from slimbert.inference.predictor import Predictor


@dataclass
class DatasetRun:
    label_ids: list[int]
    seconds: float
    tokenize_ms: float
    model_ms: float


def classify_all(predictor: Predictor, texts: Sequence[Text], *, batch_size: int = 32, bucket: bool = True
                 ) -> DatasetRun:
    """Label ids for ``texts`` in their original order; wall time includes tokenization."""
    start = time.perf_counter()
    # Character length is a cheap, good proxy for token length, and avoids tokenizing twice.
    order = np.argsort([text_length(t) for t in texts], kind="stable") if bucket else np.arange(len(texts))
    labels = np.empty(len(texts), dtype=np.int64)
    tok_ms = model_ms = 0.0
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        out = predictor.predict([texts[j] for j in idx])
        labels[idx] = [p.label_id for p in out.predictions]
        tok_ms += out.tokenize_ms
        model_ms += out.model_ms
    return DatasetRun(labels.tolist(), time.perf_counter() - start, tok_ms, model_ms)


EVAL_BATCH_SIZE = 64


def predict_label_ids(predictor: Predictor, texts: Sequence[Text], *, batch_size: int = EVAL_BATCH_SIZE) -> list[int]:
    """The dev-set prediction loop: label ids for ``texts`` in their order, length-bucketed batches.

    Everything that scores a variant on a split (the benchmark, the compression pipeline's
    creation-time accuracy, autotune's gate) calls this, so their numbers agree: with dynamic INT8
    quantization a sentence's logits depend slightly on what it is batched with.
    """
    return classify_all(predictor, texts, batch_size=batch_size, bucket=True).label_ids


def accuracy_of(predictor: Predictor, texts: Sequence[Text], labels: Sequence[int], *,
                batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Fraction of ``texts`` the predictor labels as ``labels`` (0.0 for no texts)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    preds = predict_label_ids(predictor, texts, batch_size=batch_size)
    return sum(int(p == y) for p, y in zip(preds, labels, strict=True)) / max(len(labels), 1)
