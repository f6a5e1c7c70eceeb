from __future__ import annotations

from pathlib import Path

from slimbert.inference.bucketing import classify_all
from slimbert.inference.predictor import TorchPredictor
from slimbert.models import load_tokenizer


def test_bucketed_labels_come_back_in_input_order(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir))
    predictor = TorchPredictor(model, load_tokenizer(str(tiny_model_dir)), {0: "negative", 1: "positive"})
    texts = [("word " * n).strip() + f" {i}" for i, n in enumerate([9, 1, 30, 4, 17, 2, 25, 8, 3])]
    one_by_one = [predictor.predict([t]).predictions[0].label_id for t in texts]
    bucketed = classify_all(predictor, texts, batch_size=4, bucket=True)
    plain = classify_all(predictor, texts, batch_size=4, bucket=False)
    assert bucketed.label_ids == one_by_one == plain.label_ids
    assert bucketed.seconds > 0 and bucketed.model_ms > 0
