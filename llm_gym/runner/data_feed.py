"""Batches for the training loop, fetched ahead on a thread when it pays (GPU).

The dataset's position is what a checkpoint saves, so a feed that reads ahead must not
save the dataset's own (advanced) position but the one right after the last batch the
loop actually consumed: each prefetched batch travels with the position after it.

A batch is a token tensor, or a ``Batch`` that also carries document ids (a dataset with
``document_boundaries``); both move to the device and pin alike, so the feed reads
either ahead unchanged.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol, runtime_checkable

import torch

from llm_gym.data.batch import Batch
from llm_gym.data.indexed import DataExhausted


@runtime_checkable
class CountsTokensBySource(Protocol):
    """A dataset drawing on several sources (a mixture) says how many tokens each gave,
    at a saved position, so the metrics can record them (``tokens_by_source``)."""

    def consumed_tokens(self, state: dict[str, Any] | None = None) -> dict[str, int]: ...


class BatchFeed:
    def __init__(self, dataset: Any, batch_size: int, device: torch.device, prefetch: int):
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.prefetch = prefetch
        self.wait_seconds = 0.0  # time the loop spent blocked on data, for the metrics
        self._state = dataset.state_dict()
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def next(self) -> torch.Tensor | Batch:
        started = time.perf_counter()
        if self.prefetch == 0:
            batch = self.dataset.next_batch(self.batch_size)
            self._state = None  # the dataset's own position is exact: read it lazily
        else:
            if self._thread is None:
                self._start()
            item = self._queue.get()
            if item is None:
                if isinstance(self._failure, DataExhausted):
                    raise self._failure  # the end of the data, not a failure
                raise RuntimeError("the data feed thread failed") from self._failure
            batch, self._state = item
        batch = batch.to(self.device, non_blocking=True)
        self.wait_seconds += time.perf_counter() - started
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The dataset position right after the last batch returned by ``next``."""
        return self.dataset.state_dict() if self._state is None else dict(self._state)

    def tokens_by_source(self) -> dict[str, int] | None:
        """Tokens each source gave up to the last batch returned, for a dataset that
        draws on several; None for one that does not."""
        if not isinstance(self.dataset, CountsTokensBySource):
            return None
        return self.dataset.consumed_tokens(self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.dataset.load_state_dict(state)
        self._state = self.dataset.state_dict()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.01)
        self._thread, self._queue = None, None
        self._stop.clear()

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch)
        pin = self.device.type == "cuda"  # pinned host memory makes the copy asynchronous
        self._thread = threading.Thread(target=self._produce, args=(pin,), daemon=True,
                                        name="llm_gym-data-feed")
        self._thread.start()

    def _produce(self, pin: bool) -> None:
        try:
            while not self._stop.is_set():
                batch = self.dataset.next_batch(self.batch_size)
                if pin:
                    batch = batch.pin_memory()
                item = (batch, self.dataset.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced in the loop by next()
            self._failure = exc
            self._queue.put(None)
