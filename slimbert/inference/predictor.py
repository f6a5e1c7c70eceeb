"""One predictor protocol with torch, bitsandbytes and ONNX Runtime implementations.

Tokenization is timed apart from the forward pass, so callers can report both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Prediction:
    label: str
    label_id: int
    score: float
    scores: dict[str, float]


@dataclass
class BatchOutput:
    predictions: list[Prediction]
    logits: np.ndarray = field(repr=False)
    tokenize_ms: float
    model_ms: float


class Predictor(Protocol):
    labels: dict[int, str]
    runtime: str
    device: str

    def predict(self, texts: Sequence[str]) -> BatchOutput: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def to_predictions(logits: np.ndarray, labels: dict[int, str]) -> list[Prediction]:
    probs = softmax(logits.astype(np.float64))
    out = []
    for row in probs:
        label_id = int(row.argmax())
        out.append(
            Prediction(
                label=labels[label_id],
                label_id=label_id,
                score=float(row[label_id]),
                scores={labels[i]: float(p) for i, p in enumerate(row)},
            )
        )
    return out


class _Base:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, labels: dict[int, str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length

    def _tokenize(self, texts: Sequence[str], kind: str) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        # Dynamic padding: pad to the longest text of this batch, not to max_length.
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors=kind
        )
        return dict(enc), (time.perf_counter() - start) * 1000


class TorchPredictor(_Base):
    runtime = "torch"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        labels: dict[int, str],
        *,
        device: str = "cpu",
        max_length: int = 128,
    ) -> None:
        super().__init__(tokenizer, labels, max_length)
        self.device = device
        self.model = self._place(model, device)

    def _place(self, model: PreTrainedModel, device: str) -> PreTrainedModel:
        return model.to(torch.device(device)).eval()  # type: ignore[arg-type]  # transformers stub quirk

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> BatchOutput:
        enc, tok_ms = self._tokenize(texts, "pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        start = time.perf_counter()
        logits = self.model(**enc).logits
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        model_ms = (time.perf_counter() - start) * 1000
        arr = logits.float().cpu().numpy()
        return BatchOutput(to_predictions(arr, self.labels), arr, tok_ms, model_ms)


class BnbPredictor(TorchPredictor):
    """A bitsandbytes 4-bit model: already placed by ``device_map`` (4-bit models refuse ``.to()``)."""

    runtime = "bitsandbytes"

    def _place(self, model: PreTrainedModel, device: str) -> PreTrainedModel:
        return model.eval()


class OrtPredictor(_Base):
    runtime = "onnxruntime"
    device = "cpu"

    def __init__(
        self,
        session: Any,
        tokenizer: PreTrainedTokenizerBase,
        labels: dict[int, str],
        *,
        max_length: int = 128,
    ) -> None:
        super().__init__(tokenizer, labels, max_length)
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}

    def predict(self, texts: Sequence[str]) -> BatchOutput:
        enc, tok_ms = self._tokenize(texts, "np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}
        start = time.perf_counter()
        (logits,) = self.session.run(["logits"], feed)
        model_ms = (time.perf_counter() - start) * 1000
        return BatchOutput(to_predictions(logits, self.labels), logits, tok_ms, model_ms)


class InductorPredictor(TorchPredictor):
    """An INT8 program compiled by TorchInductor (see ``compression.inductor_int8``); CPU only.

    ``model`` is the compiled program wrapped to look like a model (called with the tokenizer's
    tensors, returns an object with ``logits``, carries ``config``), so timing code treats it as torch.
    """

    runtime = "torch-inductor"

    def __init__(self, program: Any, tokenizer: PreTrainedTokenizerBase, labels: dict[int, str]) -> None:
        super().__init__(program, tokenizer, labels, device="cpu")

    def _place(self, model: Any, device: str) -> Any:
        return model
