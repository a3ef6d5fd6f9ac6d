"""The serving contract run by the container's own code, with micro-batched predictions.

Inside SageMaker's PyTorch serving container, TorchServe (a Java model server) hands each
request to sagemaker-pytorch-inference's `HandlerService`, whose sagemaker-inference
`Transformer` imports `inference.py` from the model's `code/`, calls `model_fn` once,
then per request picks the Accept default, calls `input_fn` / `predict_fn` / `output_fn`
and turns a `BaseInferenceToolkitError` into its status (anything else into 500). This
module runs that same handler service, per request, in a pool of threads: only
TorchServe is left out, and `ToolkitContext` stands for the per-request context it would
pass (headers in; status, phrase and content type out).

One change to the toolkit's path: its `predict_fn` step is routed to `PredictBatches`,
which gathers the single images of concurrent requests (up to `max_batch`, waiting at
most `max_wait` for more) and calls the same `inference.predict_fn` once on the list.
Everything a client can observe (content types, Accept handling, status codes) is the
toolkit's own behaviour; the batching changes only how many images one forward pass
takes.

A worker with several cores runs one batch per core (`runners` threads, each a forward
pass on one torch thread; torch releases the GIL while it computes) from one queue,
rather than one batch at a time spread over the cores: a queue shared by the cores
gives each request to whichever is free, where worker processes each hold the
connections the kernel gave them (an 8-client load split 6/2 waits on the busier one),
and one-thread forward passes do not spin-wait for each other on a busy machine.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sagemaker_pytorch_serving_container.handler_service import HandlerService

log = logging.getLogger(__name__)

# The inference code this repository ships, for a model directory without code/.
REPOSITORY_CODE_DIR = Path(__file__).resolve().parents[2] / "training_job" / "code"
INTERNAL_ERROR_MESSAGE = "the model failed on this request"


def code_dir_of(model_dir: Path) -> Path:
    code_dir = model_dir / "code"
    return code_dir if (code_dir / "inference.py").is_file() else REPOSITORY_CODE_DIR


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    error_message: str | None = None
    # The X-Amzn-SageMaker-Custom-Attributes value the model's code set ("" for none).
    custom_attributes: str = ""


class BatchObserver(Protocol):
    """Where batch sizes are counted (the worker's metrics.WorkerMetrics)."""

    def observe_batch(self, size: int) -> None: ...


class Overloaded(Exception):
    """Too many requests in flight: answer 503 and let the caller retry."""


class _RequestProcessor:
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers


class ToolkitContext:
    """What TorchServe's `Context` offers the toolkit for one request: the model
    directory, the request's headers, and setters for the response's status and type."""

    def __init__(self, model_dir: Path, headers: dict[str, str]) -> None:
        self.system_properties = {"model_dir": str(model_dir)}
        self.request_processor = [_RequestProcessor(headers)]
        self.status = 200
        self.phrase = ""
        self.content_type = ""

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status, self.phrase = code, phrase

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value


class PredictBatches:
    """`predict_fn` for the toolkit's threads: each call hands over one request's image
    and blocks; each of `runners` threads runs the script's `predict_fn` on a list of
    them at a time, taking the next batch from the one queue when it is free.

    A runner takes at most its share of the requests in the worker (queued or being
    computed, divided by the runners): 8 requests on 2 runners run as two batches of 4
    on two cores, not as 7 on one core and 1 on the other, so the slowest of them waits
    for half the work. Under full load the share is `max_batch` anyway."""

    def __init__(
        self,
        predict_fn: Any,
        max_batch: int,
        max_wait_seconds: float,
        metrics: BatchObserver,
        runners: int = 1,
    ) -> None:
        self._predict_fn = predict_fn
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._metrics = metrics
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
        """The toolkit's `predict_fn(data, model)` step for one request."""
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
            self._metrics.observe_batch(len(batch))
            try:
                predictions = self._predict_fn([data for data, _, _ in batch], batch[0][1])
                if len(predictions) != len(batch):
                    raise RuntimeError(f"predict_fn gave {len(predictions)} for {len(batch)}")
            except Exception as error:  # each request's toolkit maps it to 500; this
                for _, _, result in batch:  # thread lives on for the next batch
                    result.set_exception(error)
            else:
                for (_, _, result), prediction in zip(batch, predictions, strict=True):
                    result.set_result(prediction)
            with self._pending_lock:
                self._pending -= len(batch)
        self._queue.put(None)  # for the next runner


class MicroBatcher:
    """The worker's inference: the toolkit's handler service per request, in threads."""

    def __init__(
        self,
        model_dir: Path,
        max_batch: int,
        max_wait_seconds: float,
        max_queue: int,
        metrics: BatchObserver,
        runners: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.max_queue = max_queue
        self.handler = load_handler_service(model_dir)
        transformer = self.handler._service  # the Transformer the handler service built
        self._batches = PredictBatches(
            transformer._predict_fn, max_batch, max_wait_seconds, metrics, runners
        )
        transformer._predict_fn = self._batches.predict
        # The script's custom attributes hook (inference.custom_attributes_fn), read per
        # request on the thread that runs it: the toolkit's output_fn result carries only
        # the body and its type.
        self._custom_attributes = threading.local()
        script = sys.modules.get(transformer._environment.module_name)
        custom_attributes_fn = getattr(script, "custom_attributes_fn", None)
        if custom_attributes_fn is not None:
            output_fn = transformer._output_fn

            def output_with_attributes(prediction: Any, accept: str) -> Any:
                self._custom_attributes.value = custom_attributes_fn(prediction)
                return output_fn(prediction, accept)

            transformer._output_fn = output_with_attributes
        # As many requests decode at once as one batch holds, so batches can fill (more
        # threads would only contend for the GIL: the runners share one batch's worth).
        self._executor = ThreadPoolExecutor(max_batch, thread_name_prefix="inference")
        self._in_flight = 0

    def start(self) -> None:
        """Nothing to start: the handler service loaded the model in __init__."""

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Answer every request submitted, then stop the threads."""
        self._executor.shutdown(wait=True)
        self._batches.stop()

    def submit(self, body: bytes, content_type: str, accept: str) -> Future[Answer]:
        """One request, answered in the batcher's threads (a variant's container runs
        requests this way, container.py)."""
        return self._executor.submit(self.answer, body, content_type, accept)

    async def infer(self, body: bytes, content_type: str, accept: str) -> Answer:
        if self._in_flight >= self.max_queue:
            raise Overloaded
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self.answer, body, content_type, accept
            )
        finally:
            self._in_flight -= 1

    def answer(self, body: bytes, content_type: str, accept: str) -> Answer:
        """One request through the handler service, as TorchServe would hand it over."""
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        context = ToolkitContext(self.model_dir, headers)
        self._custom_attributes.value = ""
        try:
            [response] = self.handler.handle([{"body": body}], context)
        except Exception as error:  # the toolkit catches the script's errors; not its own
            log.error("the handler service failed: %r", error, exc_info=error)
            return Answer(500, b"", "application/json", INTERNAL_ERROR_MESSAGE)
        if context.status != 200:
            # The toolkit's body is the message and a traceback: the log gets both, the
            # client the message alone (a 500's message may hold anything, so not that).
            log.info("refused with %d: %s", context.status, response)
            message = context.phrase if context.status < 500 else INTERNAL_ERROR_MESSAGE
            return Answer(context.status, b"", "application/json", message)
        data = response.encode() if isinstance(response, str) else bytes(response)
        return Answer(200, data, context.content_type, None, self._custom_attributes.value)


def load_handler_service(model_dir: Path) -> HandlerService:
    """The PyTorch container's handler service, initialised on this model directory: its
    Transformer imports `inference` from the model's code/ and calls `model_fn`."""
    code_dir = code_dir_of(model_dir)
    # The container puts code/ on the module path; appended, not prepended, so a file in
    # code/ cannot shadow a standard module. `contract/` travels inside code/.
    if str(code_dir) not in sys.path:
        sys.path.append(str(code_dir))
    handler = HandlerService()
    handler.initialize(ToolkitContext(model_dir, {}))
    return handler
