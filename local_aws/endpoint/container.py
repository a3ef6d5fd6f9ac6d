"""One variant's model served in a process of its own by the project's model server
(training_job/code/serve.py, the serving image's entrypoint), as SageMaker serves each
variant in containers of its own.

A worker (server.py) serves every variant of the routing; each model directory it serves
gets a `VariantContainer`: a spawned process that runs the model server on 127.0.0.1 on
a port of its own, with that model directory, and the worker forwards each request to
its `POST /invocations` over HTTP. The server imports that version's own `code/` (first
on its module path, as in the image), so two versions never share a module: a version
whose code fails on every request fails its own variant's requests (500, counted as that
variant's 5XX errors) and no other variant's, and a version whose code cannot even be
imported never passes its ping (ContainerFailed).

What the local AWS adds here is only what SageMaker has in front of a container: the
process (`docker run IMAGE serve`) and the HTTP hop. A pipe carries the container's
side channel: ("ready", port) or ("failed", reason) once, then ("batch", size) per
forward pass for the worker's metrics; the worker's None (or its exit) stops the
container. A container that exits (its code called exit, or crashed) fails the requests
it held and every later one with 500, as an instance that stopped answering would,
until the routing replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from contract.familiarity import CUSTOM_ATTRIBUTES_HEADER
from local_aws.endpoint.metrics import WorkerMetrics

log = logging.getLogger(__name__)

# The model server's modules, as the serving image holds them in /opt/program.
SERVER_DIR = Path(__file__).resolve().parents[2] / "training_job" / "code"
START_TIMEOUT_SECONDS = 300.0  # importing torch and loading a model on a busy machine
STOP_TIMEOUT_SECONDS = 30.0  # the container answers what it holds, then exits
EXITED_MESSAGE = "the variant's model server exited"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    error_message: str | None = None
    # The X-Amzn-SageMaker-Custom-Attributes value the model's server sent ("" for none).
    custom_attributes: str = ""


class Overloaded(Exception):
    """Too many requests in flight: answer 503 and let the caller retry."""


class ContainerFailed(Exception):
    """The variant's code or model did not load (SageMaker: the container never passes
    its ping health check, and the deployment fails)."""


def import_server() -> ModuleType:
    """serve.py (and batching.py) from the repository, on the module path only while
    they import: each version's own modules come from its code/, as in the image."""
    sys.path.insert(0, str(SERVER_DIR))
    try:
        return importlib.import_module("serve")
    finally:
        sys.path.remove(str(SERVER_DIR))


@dataclass(frozen=True)
class ServerSettings:
    """The model server's settings (serve.Settings' fields) a worker gives a container."""

    max_batch: int
    max_batch_delay_ms: float
    workers: int


def run_container(model_dir: str, connection: Any, settings: dict[str, Any]) -> None:
    """The container process's entry point: the model server on 127.0.0.1, until the
    worker sends None or goes away (its end of the pipe closes)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The worker stops its containers itself, after answering what it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve = import_server()
    serve.one_thread_per_forward_pass()
    send_lock = threading.Lock()

    def send(message: object) -> None:
        with send_lock:
            connection.send(message)

    server = serve.ModelServer(
        Path(model_dir),
        serve.Settings(**settings),
        observe_batch=lambda size: send(("batch", size)),
    )

    async def until_stopped() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=_stop_when_told, args=(connection, loop, stopping), daemon=True
        ).start()
        await serve.run(
            server, "127.0.0.1", 0, stopping, on_ready=lambda port: send(("ready", port))
        )

    try:
        asyncio.run(until_stopped())
    except serve.ScriptError as error:  # the version's own code or model: reported
        log.error("the model in %s did not load: %s", model_dir, error)
        send(("failed", str(error)))
        os._exit(1)
    connection.close()
    logging.shutdown()
    os._exit(0)  # torch's interpreter teardown only delays the worker's stop


def _stop_when_told(connection: Any, loop: asyncio.AbstractEventLoop, stopping: Any) -> None:
    try:
        while connection.recv() is not None:
            pass
    except (EOFError, OSError):
        pass  # the worker is gone
    with contextlib.suppress(RuntimeError):  # the server stopped: its model did not load
        loop.call_soon_threadsafe(stopping.set)


class VariantContainer:
    """The worker's side of one variant's container: start, infer, stop, each request
    forwarded to the container's model server."""

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
        self._in_flight = 0
        self._exited = False
        self._session: aiohttp.ClientSession | None = None
        settings = ServerSettings(max_batch, max_wait_seconds * 1000, runners)
        context = multiprocessing.get_context("spawn")  # fork after torch's threads is unsafe
        self._connection, theirs = context.Pipe()
        self._process = context.Process(
            target=run_container,
            args=(str(model_dir), theirs, asdict(settings)),
            name=f"variant-{model_dir.name}",
            daemon=True,
        )
        self._process.start()
        theirs.close()  # ours is the only end left here: its EOF means the container exited
        self._url = f"http://127.0.0.1:{self._wait_until_ready()}/invocations"
        self._reader = threading.Thread(target=self._read, name="variant-reader", daemon=True)

    def _wait_until_ready(self) -> int:
        """The port the container's server listens on, once its model loaded."""
        failure = None
        try:
            if not self._connection.poll(START_TIMEOUT_SECONDS):
                failure = f"it did not load in {START_TIMEOUT_SECONDS:.0f} s"
            else:
                message = self._connection.recv()
                if message[0] == "ready":
                    return int(message[1])
                failure = message[1]
        except (EOFError, OSError):
            failure = "its process exited while loading"
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
        if self._in_flight >= self.max_queue:
            raise Overloaded
        if self._session is None:  # made on the worker's loop, the one that uses it
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the worker bounds what it sends
                timeout=aiohttp.ClientTimeout(total=None),  # the server bounds an answer
                # An absent header stays absent: aiohttp's defaults would answer a body
                # without a Content-Type as if it said application/octet-stream.
                skip_auto_headers=("Content-Type", "Accept", "User-Agent"),
            )
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        self._in_flight += 1
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                answer_body = await response.read()
                answered_type = response.headers.get("Content-Type", "")
                attributes = response.headers.get(CUSTOM_ATTRIBUTES_HEADER, "")
                status = response.status
        except aiohttp.ClientError as error:
            log.error("the container of %s did not answer: %r", self.model_dir, error)
            return Answer(500, b"", "application/json", EXITED_MESSAGE)
        finally:
            self._in_flight -= 1
        if status == 200:
            return Answer(200, answer_body, answered_type, None, attributes)
        return Answer(status, b"", "application/json", _error_message(answer_body))

    def _read(self) -> None:
        """Count each batch the container reports, until its end of the pipe closes."""
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                break
            if message[0] == "batch":
                self._metrics.observe_batch(message[1])
        self._exited = True

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # already gone
            self._connection.send(None)
        self._process.join(STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            log.error("the container of %s did not stop; killing it", self.model_dir)
            self._process.kill()
            self._process.join()
        if self._reader.is_alive():
            self._reader.join(STOP_TIMEOUT_SECONDS)
        self._connection.close()


def _error_message(body: bytes) -> str:
    """The message of the server's `{"error", "message"}` body (serve.error_answer)."""
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:300]
    message = document.get("message") if isinstance(document, dict) else None
    return str(message) if message is not None else ""
