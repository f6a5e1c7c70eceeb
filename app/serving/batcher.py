"""Dynamic micro-batching: concurrent requests for one variant share one forward pass.

Design: one asyncio queue and one collector task per variant, in the API's event loop. The collector
takes the first waiting request, then gathers more until the batch holds ``max_batch`` texts or
``max_wait_ms`` passed, and runs the forward pass in a thread pool shared by all variants
(``run_in_executor``), so the event loop keeps accepting requests while the model runs. Requests that
arrive during a forward pass queue up and form the next batch at once: under load, batches grow by
themselves and the wait only matters at low load. The pool has ``forward_workers`` threads (default 1)
and each forward uses ``cores // forward_workers`` intra-op threads, so however many variants are
loaded the process never runs more compute threads than cores. The predictors pad each batch to its
longest text. Each request holds a future; results are sliced back by position, so each caller gets
exactly its own texts' answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from slimbert.inference.predictor import Prediction, Predictor

log = logging.getLogger(__name__)


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
    texts: list[str]
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """The batcher of one variant. ``get_predictor`` runs in ``load_executor`` (it may load the variant)."""

    def __init__(
        self,
        get_predictor: Callable[[], Predictor],
        forward_executor: Executor,
        *,
        max_batch: int,
        max_wait_ms: float,
        load_executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.get_predictor = get_predictor
        self.forward_executor = forward_executor
        self.load_executor = load_executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self.batch_sizes: list[int] = []  # texts per forward pass, for tests and stats
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, texts: list[str]) -> BatchResult:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _collect(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, count = [first], len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while count < self.max_batch:
            try:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                else:
                    item = self._queue.get_nowait()
            except TimeoutError:
                break
            if count + len(item.texts) > self.max_batch:
                self._carry = item  # it opens the next batch; a request is never split
                break
            batch.append(item)
            count += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [p for p in batch if not p.future.done()]  # callers that went away
            if not batch:
                continue
            try:
                predictor = await loop.run_in_executor(self.load_executor, self.get_predictor)
                started = time.perf_counter()
                texts = [t for p in batch for t in p.texts]
                out = await loop.run_in_executor(self.forward_executor, predictor.predict, texts)
            except Exception as exc:  # every caller of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
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
