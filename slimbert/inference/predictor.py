"""One predictor protocol with torch, bitsandbytes, ONNX Runtime and Inductor implementations.

A prediction is two steps that callers time apart: ``encode`` tokenizes texts into the runtime's
ready inputs (on its device), ``forward`` runs only the model (and, on CUDA, waits for its kernels).
``predict`` is both, timed, with labels and scores. The benchmark harness and autotune time
``forward`` alone on inputs encoded once (see :func:`model_call`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
from scipy.special import softmax
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from slimbert.data import Text, tokenize
from slimbert.records import Runtime, SeqLen

# The runtime's ready inputs: torch tensors on the predictor's device, or int64 numpy arrays for
# ONNX Runtime; keyed by input name (input_ids, attention_mask...).
Encoded = dict[str, Any]
Logits = torch.Tensor | np.ndarray


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
    runtime: Runtime
    device: str  # a torch device: "cpu" or "cuda"
    tokenizer: PreTrainedTokenizerBase

    @property
    def config(self) -> PretrainedConfig:
        """The model's architecture (layers, widths, pruned heads), e.g. for computed FLOPs."""
        ...

    @property
    def eager_model(self) -> torch.nn.Module | None:
        """The eager torch module that runs, for counting FLOPs on a real forward pass; None when the
        runtime executes a graph torch's counter cannot see (ONNX Runtime, Inductor, bitsandbytes)."""
        ...

    def encode(self, texts: Sequence[Text], seq_len: SeqLen = "dynamic") -> Encoded:
        """Tokenize ``texts`` (sentences, or sentence pairs) padded to ``seq_len`` tokens, or to the
        longest text with "dynamic"."""
        ...

    def forward(self, encoded: Encoded) -> Logits:
        """Run the model only on encoded inputs; returns the logits where the runtime left them."""
        ...

    def predict(self, texts: Sequence[Text]) -> BatchOutput: ...


def model_call(predictor: Predictor, encoded: Encoded) -> Callable[[], Logits]:
    """A zero-argument callable that runs only the model on pre-tokenized inputs, for the timers."""
    return lambda: predictor.forward(encoded)


def to_predictions(logits: np.ndarray, labels: dict[int, str]) -> list[Prediction]:
    probs = softmax(logits.astype(np.float64), axis=-1)
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


def _to_numpy(logits: Logits) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        return logits.float().cpu().numpy()
    return np.asarray(logits)


class _Base(ABC):
    runtime: Runtime
    device: str
    _tensors = "pt"  # what the tokenizer returns for this runtime

    def __init__(self, tokenizer: PreTrainedTokenizerBase, labels: dict[int, str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length

    def encode(self, texts: Sequence[Text], seq_len: SeqLen = "dynamic") -> Encoded:
        # Dynamic padding: pad to the longest text of this batch, not to max_length.
        padding, max_length = ("max_length", seq_len) if isinstance(seq_len, int) else (True, self.max_length)
        enc = tokenize(self.tokenizer, texts, padding=padding, truncation=True, max_length=max_length,
                             return_tensors=self._tensors)
        return self._ready(dict(enc))

    @abstractmethod
    def _ready(self, enc: Encoded) -> Encoded:
        """The tokenizer's output as the model takes it."""

    @abstractmethod
    def forward(self, encoded: Encoded) -> Logits: ...

    def predict(self, texts: Sequence[Text]) -> BatchOutput:
        start = time.perf_counter()
        encoded = self.encode(texts)
        tokenized = time.perf_counter()
        logits = self.forward(encoded)
        done = time.perf_counter()
        arr = _to_numpy(logits)
        return BatchOutput(to_predictions(arr, self.labels), arr, (tokenized - start) * 1000, (done - tokenized) * 1000)


class TorchPredictor(_Base):
    runtime: Runtime = "torch"

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

    @property
    def config(self) -> PretrainedConfig:
        config: PretrainedConfig = self.model.config
        return config

    @property
    def eager_model(self) -> torch.nn.Module | None:
        return self.model

    def _ready(self, enc: Encoded) -> Encoded:
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def forward(self, encoded: Encoded) -> Logits:
        logits: torch.Tensor = self.model(**encoded).logits
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return logits


class BnbPredictor(TorchPredictor):
    """A bitsandbytes 4-bit model: already placed by ``device_map`` (4-bit models refuse ``.to()``)."""

    runtime: Runtime = "bitsandbytes"

    def _place(self, model: PreTrainedModel, device: str) -> PreTrainedModel:
        return model.eval()

    @property
    def eager_model(self) -> torch.nn.Module | None:
        return None  # the 4-bit matmuls run in bitsandbytes kernels, which the FLOP counter does not see


class OrtPredictor(_Base):
    runtime: Runtime = "onnxruntime"
    device = "cpu"
    _tensors = "np"

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

    @cached_property
    def config(self) -> PretrainedConfig:
        # The exported graph does not carry it; the variant's folder (the tokenizer's) has config.json.
        config: PretrainedConfig = AutoConfig.from_pretrained(self.tokenizer.name_or_path)
        return config

    @property
    def eager_model(self) -> torch.nn.Module | None:
        return None

    def _ready(self, enc: Encoded) -> Encoded:
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}

    def forward(self, encoded: Encoded) -> Logits:
        (logits,) = self.session.run(["logits"], encoded)
        return np.asarray(logits)


class InductorPredictor(TorchPredictor):
    """An INT8 program compiled by TorchInductor (see ``compression.inductor_int8``); CPU only.

    ``model`` is the compiled program wrapped to look like a model (called with the tokenizer's
    tensors, returns an object with ``logits``, carries ``config``), so timing code treats it as torch.
    """

    runtime: Runtime = "torch-inductor"

    def __init__(self, program: Any, tokenizer: PreTrainedTokenizerBase, labels: dict[int, str]) -> None:
        super().__init__(program, tokenizer, labels, device="cpu")

    def _place(self, model: Any, device: str) -> Any:
        return model

    @property
    def eager_model(self) -> torch.nn.Module | None:
        return None  # a compiled graph: the counter would see no aten ops
