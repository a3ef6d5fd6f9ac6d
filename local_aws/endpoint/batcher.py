"""Micro-batching: concurrent requests share one forward pass, off the event loop.

Requests wait in a bounded queue; one coroutine takes up to `max_batch` of them (waiting
at most `max_wait` for more after the first) and runs the inference script's
`input_fn` / `predict_fn` / `output_fn` on them in the worker's inference thread. While a
batch runs, the next one gathers, so under load batches fill without waiting.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from local_aws.endpoint.metrics import WorkerMetrics

log = logging.getLogger(__name__)

# The inference code this repository ships, for a model directory without code/.
REPOSITORY_CODE_DIR = Path(__file__).resolve().parents[2] / "training_job" / "code"


def load_inference_script(model_dir: Path) -> ModuleType:
    """Import `inference.py` as SageMaker's container does: from the model's code/ folder,
    with that folder on sys.path so its sibling modules import by name."""
    code_dir = model_dir / "code"
    if not (code_dir / "inference.py").is_file():
        code_dir = REPOSITORY_CODE_DIR
    # Appended, not prepended: a file in code/ must not shadow a standard module.
    sys.path.append(str(code_dir))
    spec = importlib.util.spec_from_file_location("inference", code_dir / "inference.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {code_dir / 'inference.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["inference"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    error_message: str | None = None


class Overloaded(Exception):
    """The queue is full: answer 503 and let the caller retry."""


@dataclass
class _Pending:
    body: bytes
    content_type: str
    accept: str
    future: asyncio.Future[Answer]


class MicroBatcher:
    def __init__(
        self,
        script: ModuleType,
        model: Any,
        max_batch: int,
        max_wait_seconds: float,
        max_queue: int,
        metrics: WorkerMetrics,
    ) -> None:
        self.script = script
        self.model = model
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def infer(self, body: bytes, content_type: str, accept: str) -> Answer:
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(body, content_type, accept, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_seconds
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                answers = await loop.run_in_executor(self._executor, self._answer_batch, batch)
            except Exception:
                log.exception("inference failed for a batch of %d", len(batch))
                answers = [_internal_error() for _ in batch]
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.future.done():  # the client may have gone away
                    pending.future.set_result(answer)

    def _refusal(self, error: Exception) -> Answer | None:
        """An Answer for the script's own 4xx errors (anything carrying `status_code`)."""
        status = getattr(error, "status_code", None)
        if not isinstance(status, int) or not 400 <= status < 500:
            return None
        return Answer(status, b"", "application/json", error_message=str(error))

    def _answer_batch(self, batch: list[_Pending]) -> list[Answer]:
        """Runs in the inference thread: decode each, one forward pass, encode each."""
        answers: list[Answer | None] = [None] * len(batch)
        images, positions = [], []
        for position, pending in enumerate(batch):
            try:
                images.append(self.script.input_fn(pending.body, pending.content_type))
                positions.append(position)
            except Exception as error:
                answers[position] = self._refusal(error) or _internal_error(error)
        if images:
            self.metrics.observe_batch(len(images))
            predictions = self.script.predict_fn(images, self.model)
            for position, prediction in zip(positions, predictions, strict=True):
                try:
                    body, content_type = self.script.output_fn(prediction, batch[position].accept)
                    answers[position] = Answer(200, body.encode(), content_type)
                except Exception as error:
                    answers[position] = self._refusal(error) or _internal_error(error)
        return [answer or _internal_error() for answer in answers]


def _internal_error(error: Exception | None = None) -> Answer:
    if error is not None:
        log.error("inference error: %r", error, exc_info=error)
    # The cause goes to the log only: a client never sees a stack trace.
    return Answer(500, b"", "application/json", error_message="the model failed on this request")
