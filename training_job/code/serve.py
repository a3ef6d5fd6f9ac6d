"""The model server: SageMaker's bring-your-own-container inference contract, run by the
serving image (Dockerfile) on SageMaker and by the local endpoint here, unchanged.

SageMaker's "Custom Inference Code with Hosting Services" (docs.aws.amazon.com/sagemaker/
latest/dg/your-algorithms-inference-code.html) sets the contract this module follows:
- SageMaker runs the image as `docker run IMAGE serve`: `serve` is the one argument;
- the model artifacts are extracted under /opt/ml/model (`--model-dir` overrides it here);
- the container answers `POST /invocations` and `GET /ping` on port 8080, or on the port
  in SAGEMAKER_BIND_TO_PORT where SageMaker sets one ("Inference pipelines": containers
  must listen on the port that variable names);
- `/ping` answers 200 with an empty body once the container can serve (503 while the
  model loads), and a model container answers `/invocations` within 60 seconds.

Each model version serves its own code, as the PyTorch serving container served it:
SAGEMAKER_PROGRAM (default inference.py) is imported from the model's `code/`, put first
on the module path, and its four functions run the request: `model_fn(model_dir)` once,
then `input_fn(body, content_type)`, `predict_fn`, `output_fn(prediction, accept)`. The
request path keeps the toolkit's rules: the body reaches input_fn as bytes (never
decoded), an absent or `*/*` Accept becomes SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
(application/json), and an exception carrying an HTTP `status_code` (the script's
InferenceError) is answered with that status and its message as
`{"error": NAME, "message": TEXT}`; any other exception is a 500 whose body says only
that the model failed (the log has the traceback).

Concurrent requests are micro-batched (PredictBatches): their decoded images go to
predict_fn as one list, up to MODEL_SERVER_MAX_BATCH images, waiting at most
MODEL_SERVER_MAX_BATCH_DELAY_MS for more; SAGEMAKER_MODEL_SERVER_WORKERS forward passes
run at once (default: one per core, each on one torch thread), and
SAGEMAKER_MODEL_SERVER_TIMEOUT (seconds, default 60) bounds one request's answer.

The server binds 127.0.0.1 unless told otherwise (`--host`); the image's entrypoint
passes `--host 0.0.0.0`, since SageMaker reaches the container from outside it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web
from batching import PredictBatches

log = logging.getLogger("serve")

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"  # the image passes 0.0.0.0 (Dockerfile)
DEFAULT_ACCEPT = "application/json"
# SageMaker Runtime's InvokeEndpoint takes at most 6 MB; nothing larger reaches a container.
MAX_BODY_BYTES = 6 * 1024 * 1024
# The response header SageMaker forwards verbatim as InvokeEndpoint's CustomAttributes
# (named here, not imported from contract/: a version's code/ may predate the module).
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
SCRIPT_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn")
INTERNAL_ERROR_MESSAGE = "the model failed on this request"
ERROR_NAMES = {
    400: "InvalidInput",
    406: "NotAcceptable",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


class ScriptError(Exception):
    """The model's code or weights did not load: the container never passes /ping."""


class SettingsError(ValueError):
    """An environment variable of the server's that is not a value it can use."""


@dataclass(frozen=True)
class Settings:
    """What the environment sets; `from_environment` reads SageMaker's variables."""

    port: int = DEFAULT_PORT
    workers: int = 1  # forward passes at once (SAGEMAKER_MODEL_SERVER_WORKERS)
    timeout_seconds: float = 60.0  # SAGEMAKER_MODEL_SERVER_TIMEOUT
    max_batch: int = 32
    max_batch_delay_ms: float = 2.0
    program: str = "inference.py"  # SAGEMAKER_PROGRAM
    default_accept: str = DEFAULT_ACCEPT  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT

    @classmethod
    def from_environment(cls, environ: dict[str, str] | os._Environ[str]) -> Settings:
        def number(name: str, default: float, parse: Callable[[str], float]) -> Any:
            text = environ.get(name, "").strip()
            if not text:
                return default
            try:
                value = parse(text)
            except ValueError:
                value = -1
            if value <= 0:
                raise SettingsError(f"{name} must be a positive number, got {text!r}")
            return value

        return cls(
            port=number("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, int),
            workers=number("SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1, int),
            timeout_seconds=number("SAGEMAKER_MODEL_SERVER_TIMEOUT", 60.0, float),
            max_batch=number("MODEL_SERVER_MAX_BATCH", 32, int),
            max_batch_delay_ms=number("MODEL_SERVER_MAX_BATCH_DELAY_MS", 2.0, float),
            program=environ.get("SAGEMAKER_PROGRAM") or "inference.py",
            default_accept=environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or DEFAULT_ACCEPT,
        )


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    # The script's custom attributes for this answer ("" for none): see `answer`.
    custom_attributes: str = ""


def error_answer(status: int, message: str) -> Answer:
    document = {"error": ERROR_NAMES.get(status, "Error"), "message": message}
    return Answer(status, json.dumps(document).encode(), "application/json")


def code_dir_of(model_dir: Path, program: str = "inference.py") -> Path:
    """The model's code/, or this file's folder for a model directory without one (a
    repository checkout serves its own training_job/code)."""
    code_dir = model_dir / "code"
    return code_dir if (code_dir / program).is_file() else Path(__file__).resolve().parent


def import_script(code_dir: Path, program: str) -> ModuleType:
    """`program` from `code_dir`, with `code_dir` the only source of the modules it
    defines: a copy imported from elsewhere (the repository's `contract`, say) is
    forgotten, and the folder goes first on the module path, where SageMaker's
    containers put code/."""
    names = {path.stem for path in code_dir.glob("*.py")} | {
        path.name for path in code_dir.iterdir() if path.is_dir() and path.name.isidentifier()
    }
    for loaded in list(sys.modules):
        if loaded.split(".", 1)[0] in names:
            del sys.modules[loaded]
    sys.path.insert(0, str(code_dir))
    if not (code_dir / program).is_file():
        raise ScriptError(f"no {program} in {code_dir}")
    script = importlib.import_module(Path(program).stem)
    missing = [name for name in SCRIPT_FUNCTIONS if not callable(getattr(script, name, None))]
    if missing:
        raise ScriptError(f"{program} does not define {', '.join(missing)}")
    return script


def _status_of(error: BaseException) -> int | None:
    """The HTTP status an error of the script carries (its InferenceError), if any."""
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and 400 <= status <= 599 else None


class ModelServer:
    """One model directory's script, model and batches, and the two routes."""

    def __init__(
        self,
        model_dir: Path,
        settings: Settings,
        observe_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.settings = settings
        self._observe_batch = observe_batch or (lambda size: None)
        self._script: ModuleType | None = None
        self._model: Any = None
        self._batches: PredictBatches | None = None
        # As many requests decode at once as one batch holds, so batches can fill.
        self._executor = ThreadPoolExecutor(settings.max_batch, thread_name_prefix="inference")

    @property
    def loaded(self) -> bool:
        return self._batches is not None

    def load(self) -> None:
        """Import the script and call its model_fn (ScriptError when either fails)."""
        code_dir = code_dir_of(self.model_dir, self.settings.program)
        try:
            script = import_script(code_dir, self.settings.program)
            model = script.model_fn(str(self.model_dir))
        except ScriptError:
            raise
        except Exception as error:  # the version's own code or weights: its failure
            raise ScriptError(f"{type(error).__name__}: {error}") from error
        self._script, self._model = script, model
        self._batches = PredictBatches(
            script.predict_fn,
            self.settings.max_batch,
            self.settings.max_batch_delay_ms / 1000,
            self._observe_batch,
            runners=self.settings.workers,
        )

    def close(self) -> None:
        """Answer every request submitted, then stop the threads."""
        self._executor.shutdown(wait=True)
        if self._batches is not None:
            self._batches.stop()

    def answer(self, body: bytes, content_type: str | None, accept: str | None) -> Answer:
        """One request through the script, as the inference toolkit ran it."""
        assert self._script is not None and self._batches is not None
        if not accept or accept == "*/*":
            accept = self.settings.default_accept
        try:
            data = self._script.input_fn(body, content_type)
            prediction = self._batches.predict(data, self._model)
            result = self._script.output_fn(prediction, accept)
        except Exception as error:
            status = _status_of(error)
            if status is None or status >= 500:
                log.error("the model failed on a request: %r", error, exc_info=error)
                return error_answer(status or 500, INTERNAL_ERROR_MESSAGE)
            message = str(getattr(error, "message", None) or error)
            log.info("refused with %d: %s", status, message)
            return error_answer(status, message)
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        data_bytes = response.encode() if isinstance(response, str) else bytes(response)
        # A script may say more than its body, in the header SageMaker forwards verbatim
        # as InvokeEndpoint's CustomAttributes (this project's: the familiarity score).
        custom_attributes_fn = getattr(self._script, "custom_attributes_fn", None)
        attributes = custom_attributes_fn(prediction) if custom_attributes_fn else ""
        return Answer(200, data_bytes, str(response_type), attributes)

    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(status=200 if self.loaded else 503)

    async def invocations(self, request: web.Request) -> web.Response:
        if not self.loaded:
            answer = error_answer(503, "the model is still loading")
        else:
            body = await request.read()
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self._executor,
                self.answer,
                body,
                request.headers.get("Content-Type"),
                request.headers.get("Accept"),
            )
            try:
                async with asyncio.timeout(self.settings.timeout_seconds):
                    answer = await work
            except TimeoutError:
                log.error("no answer in %g s", self.settings.timeout_seconds)
                answer = error_answer(500, INTERNAL_ERROR_MESSAGE)
        headers = {"Retry-After": "1"} if answer.status == 503 else {}
        if answer.custom_attributes:
            headers[CUSTOM_ATTRIBUTES_HEADER] = answer.custom_attributes
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type, **headers},
        )

    def build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/ping", self.ping)
        app.router.add_post("/invocations", self.invocations)
        return app


def one_thread_per_forward_pass() -> None:
    """Each of the workers' forward passes runs on one core (torch, when the image has
    it: one-thread passes side by side do not spin-wait for each other)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


async def run(
    server: ModelServer,
    host: str,
    port: int,
    stopping: asyncio.Event,
    on_ready: Callable[[int], None] = lambda port: None,
) -> None:
    """Listen (ping answers 503), load the model, call `on_ready` with the bound port,
    serve until `stopping` is set, then answer what was read and stop (ScriptError when
    the model does not load)."""
    runner = web.AppRunner(server.build(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    try:
        await asyncio.to_thread(server.load)
        assert runner.addresses, "the server bound no address"
        bound_port = int(runner.addresses[0][1])
        log.info("serving %s on http://%s:%d", server.model_dir, host, bound_port)
        on_ready(bound_port)
        await stopping.wait()
    finally:
        await runner.cleanup()  # stops listening, lets in-flight requests finish
        await asyncio.to_thread(server.close)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serve.py",
        description="Serve a model directory over SageMaker's container contract "
        "(GET /ping, POST /invocations).",
    )
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve"], help="SageMaker passes `serve`"
    )
    parser.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, type=Path)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (the image passes 0.0.0.0)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="default: SAGEMAKER_BIND_TO_PORT, else 8080"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_environment(os.environ)
    except SettingsError as error:
        print(f"serve.py: {error}", file=sys.stderr)
        return 2
    one_thread_per_forward_pass()

    async def serve_until_signalled() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # SageMaker stops with SIGTERM
            loop.add_signal_handler(signum, stopping.set)
        server = ModelServer(args.model_dir, settings)
        await run(server, args.host, args.port or settings.port, stopping)

    try:
        asyncio.run(serve_until_signalled())
    except ScriptError as error:
        log.error("the model in %s did not load: %s", args.model_dir, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
