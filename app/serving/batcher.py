"""Continuous batching: an idle model starts a request at once; batches form only while it is busy.

One batcher per variant, in the API's event loop (the router of text-embeddings-inference works the
same way). ``submit`` appends a request to the variant's queue and wakes the runner. The runner takes
the oldest request at once, plus whatever else is queued that fits beside it, and runs that batch on
the variant's compute thread (``run``); requests that arrive meanwhile queue up and form the next
batch as soon as the forward pass returns. So a lone request never waits for company (unless
``max_wait_ms`` > 0 asks for the old micro-batching), and under load batches grow by themselves.

What rides together (``plan_batch``):
- never sentence pairs with single sentences: the tokenizer takes one kind per call;
- at most ``max_batch`` texts and ``max_batch_tokens`` padded tokens (texts x the longest), with
  token counts estimated from characters, so nothing is tokenized twice;
- grouped by length: the queue is cut into length groups that minimise padded tokens plus a forward
  pass's fixed cost, and the group of the oldest request runs, so short texts are not padded to long
  ones and the oldest request is always in the next batch (nothing starves).
A request is never split; each holds a future, and results are sliced back by position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from slimbert.data import Text
from slimbert.inference.predictor import BatchOutput, Prediction, Predictor

log = logging.getLogger(__name__)

# A forward pass's fixed cost (the tokenizer call, the runtime's dispatch, the futures) in token
# equivalents. Measured for MiniLM-L6 on 2 cores (docs/PERFORMANCE.md, cost per text by batch): batch 1
# costs about what 22-27 more padded tokens in a batch cost, for ONNX INT8 and torch fp32 alike.
FORWARD_COST_TOKENS = 32
# Requests looked at when planning a batch: bounds the planner's work however long the queue gets.
PLAN_WINDOW = 256


def estimate_tokens(text: Text, max_length: int = 128) -> int:
    """WordPiece tokens of a text with its special tokens, estimated: English averages about four
    characters per token; [CLS] and [SEP] (and a pair's second [SEP]) are added; truncation caps it."""
    if isinstance(text, str):
        return min(max_length, len(text) // 4 + 2)
    return min(max_length, (len(text[0]) + len(text[1])) // 4 + 3)


@dataclass
class BatchResult:
    """One request's share of a forward pass."""

    predictions: list[Prediction]
    queue_ms: float
    tokenize_ms: float
    model_ms: float
    batch_texts: int
    batch_requests: int
    runtime: str
    device: str


@dataclass
class _Pending:
    texts: list[Text]
    future: asyncio.Future[BatchResult]
    pair: bool
    longest: int  # estimated tokens of its longest text
    enqueued: float = field(default_factory=time.perf_counter)


def plan_batch(pending: Sequence[_Pending], max_batch: int, max_batch_tokens: int,
               forward_cost: int = FORWARD_COST_TOKENS) -> list[int]:
    """Indices into ``pending`` (oldest first) of the next batch: the oldest request and the length
    group around it. Groups are contiguous in length order and chosen by dynamic programming to
    minimise the sum of (forward_cost + texts x longest) over the queue's groups."""
    if not pending:
        return []
    kind = pending[0].pair
    idx = [i for i, p in enumerate(pending[:PLAN_WINDOW]) if p.pair == kind]
    if len(idx) == 1:
        return idx
    idx.sort(key=lambda i: (pending[i].longest, i))
    n = len(idx)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of grouping the j shortest
    cut = [0] * (n + 1)  # the group that ends at j starts at cut[j]
    for j in range(1, n + 1):
        texts = 0
        longest = pending[idx[j - 1]].longest  # sorted: the group's last is its longest
        for i in range(j, 0, -1):
            texts += len(pending[idx[i - 1]].texts)
            if i < j and (texts > max_batch or texts * longest > max_batch_tokens):
                break  # a lone request always forms a group, even an oversized one
            cost = best[i - 1] + forward_cost + texts * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    anchor = idx.index(0)
    j = n
    while cut[j] > anchor:
        j = cut[j]
    return sorted(idx[cut[j]:j])


class ContinuousBatcher:
    """The batcher of one variant.

    ``run(fn)`` runs ``fn`` on the variant's compute thread and awaits it; ``get_predictor`` is called
    there too, just before each forward pass (it may load or reload the variant).
    """

    def __init__(
        self,
        get_predictor: Callable[[], Predictor],
        run: Callable[[Callable[[], tuple[Predictor, BatchOutput]]], Awaitable[tuple[Predictor, BatchOutput]]],
        *,
        max_batch: int,
        max_batch_tokens: int = 4096,
        max_wait_ms: float = 0.0,
        max_length: int = 128,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.get_predictor = get_predictor
        self.run = run
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.max_length = max_length
        self.on_batch = on_batch
        self.batch_sizes: list[int] = []  # texts per forward pass, for tests and stats
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, texts: Sequence[Text]) -> BatchResult:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        items = list(texts)
        pair = isinstance(items[0], tuple) if items else False
        if any(isinstance(t, tuple) != pair for t in items):
            raise ValueError("a request mixes single sentences and sentence pairs: send one kind")
        future: asyncio.Future[BatchResult] = loop.create_future()
        longest = max((estimate_tokens(t, self.max_length) for t in items), default=1)
        self._pending.append(_Pending(items, future, pair, longest))
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _take(self) -> list[_Pending]:
        self._pending = [p for p in self._pending if not p.future.done()]  # callers that went away
        chosen = set(plan_batch(self._pending, self.max_batch, self.max_batch_tokens))
        batch = [p for i, p in enumerate(self._pending) if i in chosen]
        self._pending = [p for i, p in enumerate(self._pending) if i not in chosen]
        return batch

    async def _wait_for_company(self) -> None:
        """Only with max_wait_ms > 0: hold an idle model until the batch is full or the wait is over."""
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while sum(len(p.texts) for p in self._pending) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self.max_wait_s > 0:
                await self._wait_for_company()
            batch = self._take()
            if batch:
                await self._forward(batch)

    async def _forward(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        started = time.perf_counter()

        def call() -> tuple[Predictor, BatchOutput]:
            predictor = self.get_predictor()
            return predictor, predictor.predict(texts)

        try:
            predictor, out = await self.run(call)
        except Exception as exc:  # every caller of the batch gets the error; the loop goes on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self.batch_sizes.append(len(texts))
        if self.on_batch is not None:
            self.on_batch(len(texts))
        offset = 0
        for p in batch:
            share = out.predictions[offset: offset + len(p.texts)]
            offset += len(p.texts)
            if not p.future.done():
                p.future.set_result(BatchResult(
                    share, (started - p.enqueued) * 1000, out.tokenize_ms, out.model_ms,
                    len(texts), len(batch), predictor.runtime, predictor.device))
