"""Micro-batching for the model server (serve.py): the images of concurrent requests go
to the script's `predict_fn` as one list.

Each request's thread hands over its decoded image and blocks; each of `runners` threads
takes the next batch from one queue when it is free (up to `max_batch` images, waiting at
most `max_wait` for more) and runs `predict_fn` on it, one forward pass on one core.
A queue shared by the cores gives each request to whichever core is free, and torch
releases the GIL while it computes, so the runners' passes run side by side.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class PredictBatches:
    """`predict_fn` for the request threads: `predict(data, model)` for one image.

    A runner takes at most its share of the requests in the server (queued or being
    computed, divided by the runners): 8 requests on 2 runners run as two batches of 4
    on two cores, not as 7 on one core and 1 on the other, so the slowest of them waits
    for half the work. Under full load the share is `max_batch` anyway."""

    def __init__(
        self,
        predict_fn: Any,
        max_batch: int,
        max_wait_seconds: float,
        observe_batch: Callable[[int], None],
        runners: int = 1,
    ) -> None:
        self._predict_fn = predict_fn
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._observe_batch = observe_batch
        self._queue: queue.Queue[tuple[Any, Any, Future[Any]] | None] = queue.Queue()
        self._runners = runners
        self._pending = 0  # images handed over and not yet answered: queued or computing
        self._pending_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"predict-{index}", daemon=True)
            for index in range(runners)
        ]
        for thread in self._threads:
            thread.start()

    def predict(self, data: Any, model: Any) -> Any:
        """The script's `predict_fn(data, model)` step for one request."""
        result: Future[Any] = Future()
        with self._pending_lock:
            self._pending += 1
        self._queue.put((data, model, result))
        return result.result()

    def stop(self) -> None:
        self._queue.put(None)  # each runner passes it on to the next (see _run)
        for thread in self._threads:
            thread.join()

    def _collect(self, first: tuple[Any, Any, Future[Any]]) -> list[tuple[Any, Any, Future[Any]]]:
        batch = [first]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._share():
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # seen again after this batch: stop then
                break
            batch.append(item)
        return batch

    def _share(self) -> int:
        """The most images this runner's batch takes now (see the class)."""
        if self._runners == 1:
            return self._max_batch
        return min(self._max_batch, max(1, -(-self._pending // self._runners)))

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = self._collect(first)
            self._observe_batch(len(batch))
            try:
                predictions = self._predict_fn([data for data, _, _ in batch], batch[0][1])
                if len(predictions) != len(batch):
                    raise RuntimeError(f"predict_fn gave {len(predictions)} for {len(batch)}")
            except Exception as error:  # each request is answered 500; this thread
                for _, _, result in batch:  # lives on for the next batch
                    result.set_exception(error)
            else:
                for (_, _, result), prediction in zip(batch, predictions, strict=True):
                    result.set_result(prediction)
            with self._pending_lock:
                self._pending -= len(batch)
        self._queue.put(None)  # for the next runner
