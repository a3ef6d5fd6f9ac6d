"""training_job/code/batching.py: the model server's micro-batcher, which its request
threads hand images to."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from tests import sample_model

PredictBatches = sample_model.code_module("batching").PredictBatches


def test_concurrent_requests_share_one_predict_call_and_a_failure_stays_in_its_batch() -> None:
    # The server's request threads each hand over one image; PredictBatches calls predict_fn once
    # for those waiting together, and a failing call fails that batch, not the thread.
    calls: list[int] = []
    started = threading.Barrier(4)

    def predict_fn(images: list[int], model: str) -> list[int]:
        calls.append(len(images))
        if model == "broken":
            raise ValueError("boom")
        return [image * 2 for image in images]

    sizes: list[int] = []
    together = PredictBatches(
        predict_fn, max_batch=4, max_wait_seconds=60, observe_batch=sizes.append
    )
    alone = PredictBatches(predict_fn, max_batch=1, max_wait_seconds=0, observe_batch=sizes.append)
    try:

        def one(image: int) -> int:
            started.wait()
            return int(together.predict(image, "model"))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(one, [1, 2, 3, 4])) == [2, 4, 6, 8]
        assert calls == [4]  # a full batch runs at once, without waiting out max_wait
        assert sizes == [4]  # and is reported as one batch of 4
        with pytest.raises(ValueError, match="boom"):
            alone.predict(5, "broken")
        assert alone.predict(5, "model") == 10  # the thread survived the failure
    finally:
        together.stop()
        alone.stop()


def test_runners_take_batches_from_one_queue_while_another_batch_computes() -> None:
    # Two runners: a request that arrives while one runner is inside a slow forward pass
    # is answered by the other, not queued behind it; stop() ends both.
    first_running, release_first = threading.Event(), threading.Event()

    def predict_fn(images: list[str], model: str) -> list[str]:
        if images == ["slow"]:
            first_running.set()
            assert release_first.wait(30)
        return [image.upper() for image in images]

    sizes: list[int] = []
    batches = PredictBatches(
        predict_fn, max_batch=4, max_wait_seconds=0, observe_batch=sizes.append, runners=2
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(batches.predict, "slow", "model")
        assert first_running.wait(30)
        assert batches.predict("fast", "model") == "FAST"  # while "slow" still computes
        assert not slow.done()
        release_first.set()
        assert slow.result(30) == "SLOW"
    batches.stop()
    assert not any(thread.is_alive() for thread in batches._threads)


def test_a_runner_takes_only_its_share_of_the_requests_in_the_worker() -> None:
    # Two runners busy with one image each and four waiting: the runner freed first takes
    # (1 + 4) / 2 rounded up = 3, leaving the other its share, not all 4 on one core.
    calls: list[list[str]] = []
    running = {name: threading.Event() for name in ("a", "b")}
    release = {name: threading.Event() for name in ("a", "b")}

    def predict_fn(images: list[str], model: str) -> list[str]:
        calls.append(list(images))
        if images[0] in release:
            running[images[0]].set()
            assert release[images[0]].wait(30)
        return list(images)

    sizes: list[int] = []
    batches = PredictBatches(
        predict_fn, max_batch=8, max_wait_seconds=0, observe_batch=sizes.append, runners=2
    )
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(batches.predict, "a", "model")]
        assert running["a"].wait(30)
        answers.append(pool.submit(batches.predict, "b", "model"))
        assert running["b"].wait(30)
        answers += [pool.submit(batches.predict, str(image), "model") for image in range(4)]
        while batches._queue.qsize() < 4:
            time.sleep(0.01)
        release["a"].set()
        while len(calls) < 3:
            time.sleep(0.01)
        release["b"].set()
        assert [answer.result(30) for answer in answers] == ["a", "b", "0", "1", "2", "3"]
    batches.stop()
    assert calls == [["a"], ["b"], ["0", "1", "2"], ["3"]]
