"""One variant's model served in a process of its own, as SageMaker serves each variant
in containers of its own.

A worker (server.py) serves every variant of the routing; each model directory it serves
gets a `VariantContainer`: a spawned process that puts that model's `code/` first on its
module path (as the PyTorch serving container does), imports that version's
`inference.py` and the modules beside it (`model`, `imaging`, `contract`, ...) and runs
them through the toolkit's handler service with micro-batching (batcher.MicroBatcher).
Two versions therefore never share a module: a version whose code fails on every
request fails its own variant's requests (500, counted as that variant's 5XX errors)
and no other variant's, and a version whose code cannot even be imported never starts.

The worker talks to its containers over a pipe: (request id, body, content type,
accept) in; ("answer", request id, Answer) and ("batch", size) out. A container that
exits (its code called exit, or crashed) fails the requests it held and every later one
with 500, as an instance that stopped answering would, until the routing replaces it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from local_aws.endpoint.batcher import Answer, MicroBatcher, Overloaded, code_dir_of
from local_aws.endpoint.metrics import WorkerMetrics

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 300.0  # importing torch and loading a model on a busy machine
STOP_TIMEOUT_SECONDS = 30.0  # the container answers what it holds, then exits
EXITED_MESSAGE = "the variant's model server exited"


class ContainerFailed(Exception):
    """The variant's code or model did not load (SageMaker: the container never passes
    its ping health check, and the deployment fails)."""


def _own_modules(code_dir: Path) -> None:
    """Make `code_dir` the only source of the modules it defines: forget any copy this
    process imported from elsewhere (the repository's `contract`, say) and put the
    directory first on the module path, where the serving container puts code/."""
    names = {path.stem for path in code_dir.glob("*.py")} | {
        path.name for path in code_dir.iterdir() if path.is_dir() and path.name.isidentifier()
    }
    for loaded in list(sys.modules):
        if loaded.split(".", 1)[0] in names:
            del sys.modules[loaded]
    sys.path.insert(0, str(code_dir))


class _BatchSizes:
    """The batcher's metrics inside a container: batch sizes go to the worker, which
    owns the metrics slot."""

    def __init__(self, send: Any) -> None:
        self._send = send

    def observe_batch(self, size: int) -> None:
        self._send(("batch", size))


def run_container(
    model_dir: str, connection: Any, max_batch: int, max_wait_seconds: float, runners: int
) -> None:
    """The container process's entry point: load the model, then answer until the worker
    sends None or goes away (its end of the pipe closes)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The worker stops its containers itself, after answering what it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)  # each runner thread is one forward pass on one core
    send_lock = threading.Lock()

    def send(message: object) -> None:
        with send_lock:
            connection.send(message)

    _own_modules(code_dir_of(Path(model_dir)))
    try:
        batcher = MicroBatcher(
            Path(model_dir),
            max_batch=max_batch,
            max_wait_seconds=max_wait_seconds,
            max_queue=sys.maxsize,  # the worker bounds what it sends
            metrics=_BatchSizes(send),
            runners=runners,
        )
    except Exception as error:  # the version's own code or model: its failure, reported
        log.error("the model in %s did not load", model_dir, exc_info=error)
        send(("failed", f"{type(error).__name__}: {error}"))
        os._exit(1)
    send(("ready",))

    def answered(request_id: int, result: Future[Answer]) -> None:  # in a batcher thread
        try:
            answer = result.result()
        except Exception as error:  # MicroBatcher.answer catches the code's; not this
            log.error("request %d failed", request_id, exc_info=error)
            answer = Answer(500, b"", "application/json", EXITED_MESSAGE)
        send(("answer", request_id, answer))

    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            break  # the worker is gone
        if request is None:
            break
        request_id, body, content_type, accept = request
        result = batcher.submit(body, content_type, accept)
        result.add_done_callback(functools.partial(answered, request_id))
    batcher.close()  # answers (and sends) everything submitted
    connection.close()
    logging.shutdown()
    os._exit(0)  # torch's interpreter teardown only delays the worker's stop


class VariantContainer:
    """The worker's side of one variant's container: MicroBatcher's interface (start,
    infer, stop), each request answered by the container's own process."""

    def __init__(
        self,
        model_dir: Path,
        max_batch: int,
        max_wait_seconds: float,
        max_queue: int,
        metrics: WorkerMetrics,
        runners: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.max_queue = max_queue
        self._metrics = metrics
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._exited = False
        context = multiprocessing.get_context("spawn")  # fork after torch's threads is unsafe
        self._connection, theirs = context.Pipe()
        self._process = context.Process(
            target=run_container,
            args=(str(model_dir), theirs, max_batch, max_wait_seconds, runners),
            name=f"variant-{model_dir.name}",
            daemon=True,
        )
        self._process.start()
        theirs.close()  # ours is the only end left here: its EOF means the container exited
        self._wait_until_ready()
        self._reader = threading.Thread(target=self._read, name="variant-reader", daemon=True)

    def _wait_until_ready(self) -> None:
        failure = None
        try:
            if not self._connection.poll(START_TIMEOUT_SECONDS):
                failure = f"it did not load in {START_TIMEOUT_SECONDS:.0f} s"
            else:
                message = self._connection.recv()
                if message[0] != "ready":
                    failure = message[1]
        except (EOFError, OSError):
            failure = "its process exited while loading"
        if failure is not None:
            self._process.kill()
            self._process.join()
            self._connection.close()
            log.error("the model in %s did not load: %s", self.model_dir, failure)
            raise ContainerFailed(f"its code or model did not load: {failure}")

    def start(self) -> None:
        self._reader.start()

    async def infer(self, body: bytes, content_type: str, accept: str) -> Answer:
        if self._exited:
            return Answer(500, b"", "application/json", EXITED_MESSAGE)
        if len(self._pending) >= self.max_queue:
            raise Overloaded
        request_id = next(self._ids)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        with self._pending_lock:
            self._pending[request_id] = answer
        try:
            with self._send_lock:
                self._connection.send((request_id, body, content_type, accept))
        except (OSError, ValueError):  # the container is gone; the reader fails the rest
            with self._pending_lock:
                self._pending.pop(request_id, None)
            return Answer(500, b"", "application/json", EXITED_MESSAGE)
        return await answer

    def _read(self) -> None:
        """Hand each answer to the request waiting for it, on that request's loop."""
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                break
            if message[0] == "batch":
                self._metrics.observe_batch(message[1])
                continue
            _, request_id, answer = message
            with self._pending_lock:
                waiting = self._pending.pop(request_id, None)
            if waiting is not None:
                waiting.get_loop().call_soon_threadsafe(_settle, waiting, answer)
        self._exited = True
        with self._pending_lock:
            orphans, self._pending = list(self._pending.values()), {}
        if orphans:
            log.error("the container of %s exited with requests in it", self.model_dir)
        for waiting in orphans:
            failed = Answer(500, b"", "application/json", EXITED_MESSAGE)
            waiting.get_loop().call_soon_threadsafe(_settle, waiting, failed)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        try:
            with self._send_lock:
                self._connection.send(None)
        except (OSError, ValueError):
            pass  # already gone
        self._process.join(STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            log.error("the container of %s did not stop; killing it", self.model_dir)
            self._process.kill()
            self._process.join()
        if self._reader.is_alive():
            self._reader.join(STOP_TIMEOUT_SECONDS)
        self._connection.close()


def _settle(waiting: asyncio.Future[Answer], answer: Answer) -> None:
    if not waiting.done():
        waiting.set_result(answer)
