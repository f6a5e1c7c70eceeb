"""The API's side of GPU predictions: send ``TASK_PREDICT`` to the ``gpu`` queue and wait, bounded."""

from __future__ import annotations

from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout

from app.services.queue import QueueClient
from slimbert.data import Text
from slimbert.errors import SlimBertError
from slimbert.tasks import QUEUE_GPU, TASK_PREDICT


class RemotePredictTimeout(SlimBertError):
    status_code = 504


class RemotePredictFailed(SlimBertError):
    status_code = 502


class RemoteForwarder:
    def __init__(self, queue: QueueClient, timeout_s: float) -> None:
        self.queue = queue
        self.timeout_s = timeout_s

    def gpu_worker_live(self) -> bool:
        return self.queue.redis_ok() and QUEUE_GPU in self.queue.live_queues()

    def predict(self, family: str, variant: str, texts: list[Text]) -> dict[str, Any]:
        """Blocking: run it in a thread. The message expires with the wait, so no worker runs it late."""
        self.queue.require_redis()
        result = self.queue.celery.send_task(TASK_PREDICT, args=[family, variant, texts], queue=QUEUE_GPU,
                                             expires=self.timeout_s)
        try:
            answer: dict[str, Any] = result.get(timeout=self.timeout_s, propagate=True)
        except CeleryTimeout:
            raise RemotePredictTimeout(
                f"no answer from the gpu queue within {self.timeout_s:.0f}s",
                hint="check the GPU worker, or raise SLIMBERT_REMOTE_PREDICT_TIMEOUT_S") from None
        except Exception as exc:  # the worker's own error, rebuilt by Celery
            raise RemotePredictFailed(f"the gpu worker failed: {type(exc).__name__}: {exc}",
                                      hint="see the GPU worker's log") from exc
        finally:
            result.forget()
        return answer
