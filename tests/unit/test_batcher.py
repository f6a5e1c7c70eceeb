"""Continuous batching: who rides in which forward pass, with a fake predictor whose forward the test
holds and releases, so every assertion is about order and membership, never about time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pytest

from app.serving.batcher import ContinuousBatcher, _Pending, estimate_tokens, plan_batch
from slimbert.data import Text
from slimbert.inference.predictor import BatchOutput, Prediction, Predictor

T = TypeVar("T")


class GatedPredictor:
    """Label = parity of the text's number (a pair: of its first half); the first forward waits for
    ``release`` so the test can queue requests while the model is busy."""

    runtime = "fake"
    device = "cpu"
    labels = {0: "even", 1: "odd"}

    def __init__(self, hold_first: bool = True) -> None:
        self.batches: list[list[Text]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def predict(self, texts: Sequence[Text]) -> BatchOutput:
        self.batches.append(list(texts))
        self.started.set()
        self.release.wait(30)
        nums = [int(t if isinstance(t, str) else t[0]) for t in texts]
        preds = [Prediction(self.labels[n % 2], n % 2, float(n), {}) for n in nums]
        return BatchOutput(preds, np.zeros((len(texts), 2)), 0.1, 1.0)


def _runner(pool: ThreadPoolExecutor) -> Callable[[Callable[[], T]], Any]:
    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)
    return run


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def _batcher(fake: GatedPredictor | Callable[[], Predictor], pool: ThreadPoolExecutor, **kw: Any) -> ContinuousBatcher:
    get = fake if callable(fake) and not isinstance(fake, GatedPredictor) else (lambda: fake)
    return ContinuousBatcher(get, _runner(pool), **{"max_batch": 32, **kw})  # type: ignore[arg-type]


def test_an_idle_model_starts_at_once_and_batches_form_while_it_runs() -> None:
    fake = GatedPredictor()

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(fake, pool, max_wait_ms=0)
            first = asyncio.ensure_future(batcher.submit(["1"]))
            await _until(fake.started)  # the lone request went in without waiting for company
            assert fake.batches == [["1"]]
            later = [asyncio.ensure_future(batcher.submit([str(n)])) for n in (2, 3, 4)]
            await asyncio.sleep(0.01)  # queued behind the busy model, not started
            assert fake.batches == [["1"]]
            fake.release.set()
            results = await asyncio.gather(first, *later)
            await batcher.close()
            return results

    results = asyncio.run(main())
    assert fake.batches == [["1"], ["2", "3", "4"]]
    assert [r.predictions[0].score for r in results] == [1.0, 2.0, 3.0, 4.0]
    assert [r.batch_requests for r in results] == [1, 3, 3, 3]


def test_a_request_is_never_split_and_each_caller_gets_its_own_share() -> None:
    fake = GatedPredictor()
    requests = [[str(10 * i + j) for j in range(1 + i % 3)] for i in range(12)]

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(fake, pool, max_batch=4)
            head = asyncio.ensure_future(batcher.submit(["0"]))
            await _until(fake.started)
            rest = [asyncio.ensure_future(batcher.submit(r)) for r in requests]
            await asyncio.sleep(0.01)
            fake.release.set()
            out = await asyncio.gather(head, *rest)
            await batcher.close()
            return out[1:]

    for texts, res in zip(requests, asyncio.run(main()), strict=True):
        assert [p.score for p in res.predictions] == [float(t) for t in texts]
        assert res.batch_texts <= 4
    served = fake.batches[1:]
    assert all(len(b) <= 4 for b in served) and max(len(b) for b in served) > 1
    for r in requests:  # each request's texts sit together, in order, in one batch
        assert any(b[i: i + len(r)] == r for b in served for i in range(len(b)))


def test_pairs_and_single_sentences_never_share_a_batch() -> None:
    fake = GatedPredictor()

    async def main() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(fake, pool)
            head = asyncio.ensure_future(batcher.submit(["0"]))
            await _until(fake.started)
            rest = [asyncio.ensure_future(batcher.submit(x)) for x in
                    (["2"], [("3", "a second sentence")], ["4"], [("5", "b"), ("7", "c")])]
            await asyncio.sleep(0.01)
            fake.release.set()
            out = await asyncio.gather(head, *rest)
            await batcher.close()
            return out

    out = asyncio.run(main())
    assert fake.batches == [["0"], ["2", "4"], [("3", "a second sentence"), ("5", "b"), ("7", "c")]]
    assert [p.label for p in out[4].predictions] == ["odd", "odd"]
    with pytest.raises(ValueError, match="mixes"):
        asyncio.run(_batcher(fake, ThreadPoolExecutor(1)).submit(["1", ("2", "x")]))


def test_errors_reach_every_caller_of_the_batch_and_serving_goes_on() -> None:
    fake = GatedPredictor(hold_first=False)
    calls = {"n": 0}

    def get() -> Predictor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("load failed")
        return fake  # type: ignore[return-value]

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(get, pool)
            first = await asyncio.gather(batcher.submit(["1"]), return_exceptions=True)
            assert all(isinstance(r, RuntimeError) for r in first)
            assert (await batcher.submit(["3"])).predictions[0].label == "odd"
            await batcher.close()

    asyncio.run(main())


def test_a_wait_above_zero_holds_an_idle_model_until_the_batch_is_full() -> None:
    fake = GatedPredictor(hold_first=False)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = _batcher(fake, pool, max_batch=3, max_wait_ms=60_000)  # only a full batch ends the wait
            await asyncio.gather(*(batcher.submit([str(n)]) for n in (1, 2, 3)))
            await batcher.close()

    asyncio.run(main())
    assert fake.batches == [["1", "2", "3"]]


# --- the planner -----------------------------------------------------------------------------------

def _pending(*lengths: int | tuple[int, int], pair: bool = False) -> list[_Pending]:
    """One request per entry: an int is one text of that many tokens; (n, tokens) is n texts."""
    loop = asyncio.new_event_loop()
    out = []
    for x in lengths:
        n, tokens = x if isinstance(x, tuple) else (1, x)
        out.append(_Pending(["t"] * n, loop.create_future(), pair, tokens))
    loop.close()
    return out


def test_plan_groups_by_length_around_the_oldest_request() -> None:
    queue = _pending(10, 60, 11, 62, 9, 61, 12, 60)
    short = plan_batch(queue, max_batch=32, max_batch_tokens=4096)
    assert 0 in short and sorted(queue[i].longest for i in short) == [9, 10, 11, 12]
    long_first = plan_batch(queue[1:], max_batch=32, max_batch_tokens=4096)
    assert 0 in long_first and sorted(queue[1:][i].longest for i in long_first) == [60, 60, 61, 62]


def test_plan_takes_everything_when_lengths_are_alike() -> None:
    queue = _pending(20, 22, 21, 24, 23)
    assert plan_batch(queue, max_batch=32, max_batch_tokens=4096) == [0, 1, 2, 3, 4]


def test_plan_respects_the_text_and_token_budgets() -> None:
    queue = _pending(*[30] * 10)
    assert len(plan_batch(queue, max_batch=4, max_batch_tokens=4096)) == 4
    by_tokens = plan_batch(queue, max_batch=32, max_batch_tokens=100)  # 3 x 30 padded tokens fit, 4 do not
    assert 0 in by_tokens and len(by_tokens) == 3
    multi = _pending((3, 30), (2, 30), (1, 30))
    assert plan_batch(multi, max_batch=4, max_batch_tokens=4096) in ([0], [0, 2])  # never over 4 texts
    assert plan_batch(_pending(500), max_batch=32, max_batch_tokens=100) == [0]  # an oversized lone request runs


def test_plan_never_mixes_kinds_and_starts_with_the_oldest() -> None:
    queue = _pending(20, 20, pair=True) + _pending(20, 20)
    assert plan_batch(queue, 32, 4096) == [0, 1]
    assert plan_batch(queue[2:] + queue[:2], 32, 4096) == [0, 1]
    assert plan_batch([], 32, 4096) == []


def test_token_estimate() -> None:
    assert estimate_tokens("a" * 40) == 12
    assert estimate_tokens(("a" * 20, "b" * 20)) == 13
    assert estimate_tokens("a" * 10_000, max_length=128) == 128
