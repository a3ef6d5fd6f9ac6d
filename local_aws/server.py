"""The local AWS: moto's server on 127.0.0.1, configured the way this project needs it.

Everything that makes local mode differ from AWS lives in `local_aws/`; `handlers/`,
`statemachine/` and `training_job/` only ever see endpoint URLs (`AWS_ENDPOINT_URL*`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import requests
from botocore.config import Config

from local_aws import (
    cloudformation,
    conditional_writes,
    distributed_map,
    events,
    iam,
    lambda_executor,
    model_packages,
    s3_policy,
    sagemaker_endpoints,
    sagemaker_runtime,
    serving_image,
    stepfunctions,
)
from local_aws.supervisor import Claim, Daemon, Readiness

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566  # LocalStack's conventional port, so either emulator can serve
DEFAULT_REGION = "us-east-1"
# Where `python -m training_job deploy --mode local` serves the model by default: the
# SageMaker Runtime API of local mode (boto3 reads AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME).
DEFAULT_ENDPOINT_PORT = 8080
READY_PATH = "/moto-api/data.json"  # answers 200 once moto's server takes requests
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
# `1` logs every request the server answers (werkzeug's access log) in its log; off by
# default: a line per request, under a lock every request thread takes, cost ~2% of the
# server's CPU in the workflow benchmark. Errors and refusals are logged either way.
ACCESS_LOG_VARIABLE = "LOCAL_AWS_ACCESS_LOG"

# Gaps in the emulator that this project closes are installed here, one function each,
# before the server takes its first request (see docs/local-mode.md).
EMULATOR_PATCHES: list[Callable[[], None]] = [
    *cloudformation.PATCHES,
    *conditional_writes.PATCHES,
    *distributed_map.PATCHES,
    *events.PATCHES,
    *iam.PATCHES,
    *lambda_executor.PATCHES,
    *model_packages.PATCHES,
    *s3_policy.PATCHES,
    *sagemaker_endpoints.PATCHES,
    *sagemaker_runtime.PATCHES,
    *stepfunctions.PATCHES,
]


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on now, for a server started next (tests, benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def endpoint_url(port: int, host: str = DEFAULT_HOST) -> str:
    return f"http://{host}:{port}"


def client_environment(
    port: int,
    host: str = DEFAULT_HOST,
    endpoint_port: int = DEFAULT_ENDPOINT_PORT,
    region: str = DEFAULT_REGION,
) -> dict[str, str]:
    """The variables that point boto3, the AWS CLI and osls at the local AWS in `region`,
    and the SageMaker Runtime API at the local endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url(port, host),
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint_url(endpoint_port, host),
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        # StartSyncExecution's host prefix (`sync-`) would make `sync-127.0.0.1`, which
        # resolves nowhere; the SDKs' own setting sends it to the endpoint as given.
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
    }


def cache_moto_module_list() -> None:
    """Speed: moto's dispatcher lists its own package folder (a listdir and ~190 stats)
    twice per request, holding the lock every request passes through, so under load the
    requests queue behind it. The folders cannot change while the server runs."""
    import functools

    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = functools.cache(lambda: modules)


def reuse_parsed_state_machines() -> None:
    """Speed: moto parses the state machine's definition (an ANTLR grammar in pure Python)
    on every execution, the largest part of the engine's own CPU per execution. Parse once
    per definition.

    An execution keeps its state in its own `Environment` (the retriers' attempt counts
    live in `env.heap`, under each component's `heap_key`), not in the parsed components,
    so executions can share one parsed program, as long as nothing sets an attribute on
    a component while it runs: the one lazy attribute (`heap_key`) is set here, before the
    program is shared, and Map and Parallel states (whose pools and run records are made
    while they run) get a deep copy per execution, as every program did before. A deep
    copy cost a fifth of the engine's CPU per execution (docs/benchmarks.md)."""
    import copy
    import functools

    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    @functools.lru_cache(maxsize=64)
    def parsed(definition: str) -> tuple[Any, bool]:
        program = AmazonStateLanguageParser.parse(definition)[0]
        return program, prepare_for_sharing(program)

    def evaluation_entrypoint(self: ExecutionWorker) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        program, shared = parsed(definition)
        if shared:
            return program
        try:
            return copy.deepcopy(program)
        except (TypeError, copy.Error):  # a component that cannot be copied: parse afresh
            return AmazonStateLanguageParser.parse(definition)[0]

    ExecutionWorker._get_evaluation_entrypoint = evaluation_entrypoint  # type: ignore[method-assign]


def prepare_for_sharing(program: Any) -> bool:
    """Set every component's lazy `heap_key` of a parsed program, and say whether
    executions may share it: not when it has a Map or Parallel state."""
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.component.state.exec.state_parallel.state_parallel import (
        StateParallel,
    )

    shareable = True
    for component in components_of(program):
        if isinstance(component, (StateMap, StateParallel)):
            shareable = False
        if isinstance(component, EvalComponent):
            _ = component.heap_key
    return shareable


def components_of(program: Any) -> Iterator[Any]:
    """Every component of a parsed ASL program, each once: the program, its states and
    all they hold (in attributes, lists and dicts)."""
    from moto.stepfunctions.parser.asl.component.component import Component

    seen: set[int] = set()
    pending: list[Any] = [program]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, Component):
            yield item
            pending.extend(vars(item).values())


def cache_response_method_names() -> None:
    """Speed: moto lists a response class's methods (`inspect.getmembers`) on every
    request to see whether the action is one of them, ~2% of the engine's CPU. The
    classes do not change once the server runs (every patch is installed before it
    starts): list each class once."""
    import functools

    from moto.core import responses

    listing = responses.method_names_from_class

    @functools.cache
    def method_names(clazz: type) -> frozenset[str]:
        return frozenset(listing(clazz))

    responses.method_names_from_class = method_names  # type: ignore[assignment]


def reuse_parsed_json_paths() -> None:
    """Speed: jsonpath_ng's `parse` builds a new PLY parser (its LALR tables included)
    for every expression, and moto's interpreter parses each state's InputPath, OutputPath
    and ResultPath on every state of every execution: about 5 parser builds an execution.
    An expression parses to the same immutable tree every time; parse each once."""
    import functools

    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    json_path.parse = functools.lru_cache(maxsize=1024)(json_path.parse)
    result_path.parse = functools.lru_cache(maxsize=1024)(result_path.parse)


def answer_own_requests_in_process(app: Any, host: str, port: int) -> None:
    """Speed: the local AWS calls itself. Step Functions' interpreter reaches Lambda (and
    any other service a task calls) through a boto3 client at this server's own address,
    so each task paid for a loopback connection, a server thread and werkzeug's HTTP
    parsing on top of the request itself. A botocore `before-send` handler now hands a
    request addressed to this server straight to the same WSGI application the socket
    feeds, with the environ werkzeug's server would build: the request is still
    serialized, signed (and its signature checked), routed, authorized against the
    caller's role and answered by the same code; only the socket is skipped."""
    import io

    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from botocore.handlers import BUILTIN_HANDLERS
    from werkzeug.test import run_wsgi_app

    own = {f"{name}:{port}" for name in (host, "localhost", "127.0.0.1")}

    class Body(io.BytesIO):
        """The answer's body as botocore reads a raw response: read() or stream()."""

        def stream(self, **_kwargs: Any) -> Iterator[bytes]:
            while chunk := self.read(64 * 1024):
                yield chunk

    def send_in_process(request: AWSPreparedRequest, **_kwargs: Any) -> AWSResponse | None:
        url = urlsplit(request.url)
        if url.netloc not in own:
            return None
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        raw_path = url.path + (f"?{url.query}" if url.query else "")
        environ: dict[str, Any] = {  # as werkzeug.serving's make_environ builds it
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(url.path).encode().decode("latin-1"),
            "QUERY_STRING": url.query,
            "REQUEST_URI": raw_path,
            "RAW_URI": raw_path,
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": 0,
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": url.netloc,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = text
        answer, status, headers = run_wsgi_app(app, environ)
        try:
            content = b"".join(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        return AWSResponse(request.url, int(status.split()[0]), dict(headers), Body(content))

    # Sessions made from now on (boto3's default one is made on first use) get it.
    BUILTIN_HANDLERS.append(("before-send", send_in_process))


# Changes for speed only: what the emulator answers stays the same.
PERFORMANCE_PATCHES: list[Callable[[], None]] = [
    cache_moto_module_list,
    cache_response_method_names,
    reuse_parsed_state_machines,
    reuse_parsed_json_paths,
]


def without_aws_variables(environment: Mapping[str, str]) -> dict[str, str]:
    """A process environment with every AWS_* variable left out, so that only the local
    AWS's variables (added back by the caller) decide where AWS calls go."""
    return {name: value for name, value in environment.items() if not name.startswith("AWS_")}


def local_client(variables: Mapping[str, str], service: str, **kwargs: Any) -> Any:
    """A boto3 client for the local AWS that `variables` (client_environment's) describe,
    whatever this process's own environment says."""
    config = Config(inject_host_prefix=False)  # as AWS_DISABLE_HOST_PREFIX_INJECTION above
    if "config" in kwargs:
        config = config.merge(kwargs.pop("config"))
    return boto3.client(
        service,
        config=config,
        endpoint_url=kwargs.pop("endpoint_url", variables["AWS_ENDPOINT_URL"]),
        region_name=kwargs.pop("region_name", variables["AWS_DEFAULT_REGION"]),
        aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=variables["AWS_SESSION_TOKEN"],
        **kwargs,
    )


def configure_moto() -> None:
    """Run state machines for real and keep Lambda off Docker (no engine here)."""
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    default_user_config["batch"] = {"use_docker": False}
    for patch in [*EMULATOR_PATCHES, *PERFORMANCE_PATCHES]:
        patch()


def serve(
    port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, endpoint_port: int = DEFAULT_ENDPOINT_PORT
) -> None:
    """Serve the local AWS in the foreground until SIGTERM or SIGINT."""
    # Where this server forwards SageMaker Runtime calls (local_aws.sagemaker_runtime).
    os.environ.setdefault("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint_url(endpoint_port, host))
    # moto's Step Functions interpreter calls Lambda at localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    # Lambda handlers run by the local executor reach this server when nothing else is set.
    os.environ[lambda_executor.SERVER_URL_VARIABLE] = endpoint_url(port, host)
    configure_moto()
    if os.environ.get(ACCESS_LOG_VARIABLE) != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    answer_own_requests_in_process(server._server.app, host, port)  # type: ignore[union-attr]
    print(f"local AWS listening on {endpoint_url(port, host)}", flush=True)
    stopped.wait()
    server.stop()
    lambda_executor.POOLS.shutdown()


def wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """Block until the server at `url` answers, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{url}{READY_PATH}", timeout=2).raise_for_status()
            return
        except requests.RequestException as error:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the local AWS at {url} did not answer in {timeout:.0f}s"
                ) from error
            time.sleep(0.1)


@dataclass(frozen=True)
class RunningServer:
    """A local AWS started by `local_aws_server`: where it listens and where it logs."""

    port: int
    host: str
    pid: int
    log: Path

    @property
    def url(self) -> str:
        return endpoint_url(self.port, self.host)

    def client_environment(self, region: str = DEFAULT_REGION) -> dict[str, str]:
        return client_environment(self.port, self.host, region=region)


@contextmanager
def local_aws_server(
    state_dir: Path,
    port: int,
    *,
    host: str = DEFAULT_HOST,
    endpoint_port: int = DEFAULT_ENDPOINT_PORT,
    environment: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
) -> Iterator[RunningServer]:
    """`python -m local_aws serve` in the background for the length of a `with` block: the
    one way the demo, the benchmarks and the test fixtures bring up a local AWS.

    Once it answers, this checkout's serving image is recorded in it in `region` (the one
    its clients work in), as `up` records it (`record_serving_image`). It runs under the
    supervisor as `make local-up`'s server does (name `aws` in `state_dir`, log in
    `state_dir/aws.log`), so it is ready only once the process started here answers, and
    a second server on the same state dir is refused. Its environment is this process's
    without any AWS_* variable, plus `environment`: the Lambda handlers it runs see only
    the endpoints given here (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, when set, wins over
    `endpoint_port`).
    """
    daemon = Daemon("aws", state_dir)
    with daemon.claim() as claim:
        pid = start_in_background(claim, port, host, endpoint_port, environment or {})
    try:
        record_serving_image(port, host, region)
        yield RunningServer(port, host, pid, daemon.log_file)
    finally:
        daemon.stop(STOP_TIMEOUT_SECONDS)


def with_source_on_path(variables: dict[str, str]) -> dict[str, str]:
    """`variables` with this checkout first on PYTHONPATH, so `-m local_aws...` runs from
    any working directory (the package is not installed)."""
    source_root = str(Path(__file__).resolve().parent.parent)
    search_path = [source_root, variables.get("PYTHONPATH", "")]
    return {**variables, "PYTHONPATH": os.pathsep.join(part for part in search_path if part)}


def start_in_background(
    claim: Claim, port: int, host: str, endpoint_port: int, environment: Mapping[str, str]
) -> int:
    """Start `serve` under `claim` (`up` and `local_aws_server` alike) and return its pid
    once it answers; its environment is this process's without AWS_*, plus `environment`."""
    argv = [sys.executable, "-m", "local_aws", "serve", "--port", str(port), "--host", host]
    argv += ["--endpoint-port", str(endpoint_port)]
    variables = with_source_on_path(without_aws_variables(os.environ))
    variables.update(environment)
    return claim.start(argv, Readiness(host, port, READY_PATH, READY_TIMEOUT_SECONDS), variables)


def record_serving_image(port: int, host: str = DEFAULT_HOST, region: str = DEFAULT_REGION) -> str:
    """The one-time setup of a started local AWS (`up` and `local_aws_server` alike): this
    checkout's serving image recorded in `region` as `image push` records one there
    (serving_image.py)."""
    variables = client_environment(port, host, region=region)
    return serving_image.record_local_image(
        local_client(variables, "ecr"), local_client(variables, "ssm")
    )


def write_env_file(path: Path, variables: dict[str, str]) -> None:
    """Write `export NAME=value` lines atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(f"export {name}={value}\n" for name, value in variables.items()))
    tmp.replace(path)
