"""local_aws/endpoint/batcher.py: the micro-batcher the toolkit's threads hand images to."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from local_aws.endpoint.batcher import PredictBatches
from local_aws.endpoint.metrics import WorkerMetrics, allocate_slots


def test_concurrent_requests_share_one_predict_call_and_a_failure_stays_in_its_batch() -> None:
    # The toolkit's threads each hand over one image; PredictBatches calls predict_fn once
    # for those waiting together, and a failing call fails that batch, not the thread.
    calls: list[int] = []
    started = threading.Barrier(4)

    def predict_fn(images: list[int], model: str) -> list[int]:
        calls.append(len(images))
        if model == "broken":
            raise ValueError("boom")
        return [image * 2 for image in images]

    metrics = WorkerMetrics(allocate_slots(1)[0])
    together = PredictBatches(predict_fn, max_batch=4, max_wait_seconds=60, metrics=metrics)
    alone = PredictBatches(predict_fn, max_batch=1, max_wait_seconds=0, metrics=metrics)
    try:

        def one(image: int) -> int:
            started.wait()
            return int(together.predict(image, "model"))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(one, [1, 2, 3, 4])) == [2, 4, 6, 8]
        assert calls == [4]  # a full batch runs at once, without waiting out max_wait
        with pytest.raises(ValueError, match="boom"):
            alone.predict(5, "broken")
        assert alone.predict(5, "model") == 10  # the thread survived the failure
    finally:
        together.stop()
        alone.stop()
