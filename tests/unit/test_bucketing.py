from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimbert.inference.bucketing import classify_all
from slimbert.inference.predictor import TorchPredictor
from slimbert.models import load_tokenizer


def test_bucketed_labels_come_back_in_input_order(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir))
    predictor = TorchPredictor(model, load_tokenizer(str(tiny_model_dir)), {0: "negative", 1: "positive"})
    texts = [("word " * n).strip() + f" {i}" for i, n in enumerate([9, 1, 30, 4, 17, 2, 25, 8, 3])]
    # A random head labels every text alike, which would hide a reordering. Move the decision threshold
    # into the widest gap between the middle texts' logit margins, so the labels differ from text to text.
    margins = np.array([np.diff(predictor.predict([t]).logits[0])[0] for t in texts])
    ranked = np.sort(margins)
    cut = max(range(2, len(texts) - 2), key=lambda k: ranked[k + 1] - ranked[k])
    with torch.no_grad():
        model.classifier.bias[1] -= float(ranked[cut] + ranked[cut + 1]) / 2
    one_by_one = [predictor.predict([t]).predictions[0].label_id for t in texts]
    assert one_by_one == (margins > (ranked[cut] + ranked[cut + 1]) / 2).astype(int).tolist()
    assert 3 <= sum(one_by_one) <= len(texts) - 3
    # Labels left in length order, or in batch order, would not match the input order.
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    assert [one_by_one[i] for i in by_length] != one_by_one
    bucketed = classify_all(predictor, texts, batch_size=4, bucket=True)
    plain = classify_all(predictor, texts, batch_size=4, bucket=False)
    assert bucketed.label_ids == one_by_one == plain.label_ids
    for batch_size in (1, 2, 5, 64):
        assert classify_all(predictor, texts, batch_size=batch_size, bucket=True).label_ids == one_by_one
    assert bucketed.seconds > 0 and bucketed.model_ms > 0
