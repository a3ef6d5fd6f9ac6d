"""Lambda functions in the local AWS run their deployed code for real.

moto's Lambda without Docker (`awslambda_simple`) answers every Invoke with a canned
string. `run_deployed_code()` replaces that one seam, `LambdaSimpleBackend.invoke`, with an executor
that behaves like Lambda for the cases this project relies on:

- the deployment package moto stores (`code_bytes`) is unpacked once per code sha256 into
  a cache directory, and the handler runs in a separate Python process
  (`local_aws/lambda_runtime/bootstrap.py`) with the function's handler, environment
  variables, memory size and timeout;
- workers stay warm and are reused, as Lambda reuses execution environments: a small pool
  per function version and configuration; an update of code or configuration gets fresh
  ones;
- a raised exception comes back as Lambda reports it: status 200, header
  `x-amz-function-error: Unhandled`, payload `{"errorType", "errorMessage",
  "stackTrace"}`, which Step Functions turns into an error named `errorType`;
- a handler that runs past its timeout is killed with its process group and replaced, and
  the invocation answers `Sandbox.Timedout` ("Task timed out after N.NN seconds"), as
  current Lambda runtimes do; a worker that dies answers `Runtime.ExitError`;
- `ReservedConcurrentExecutions` is enforced: an invocation beyond it is throttled with
  `TooManyRequestsException` (HTTP 429), which Step Functions names
  `Lambda.TooManyRequestsException`, the service error a Retry block exists for;
- `InvocationType: Event` runs in the background and answers at once; `DryRun` runs
  nothing.

The worker's environment is built, not inherited: Lambda's reserved variables (the
function's region among them), the function's own variables, temporary credentials of the
function's role (assumed for it by `local_aws.iam`, so its calls are evaluated against that
role), and from the server's environment only the endpoint variables (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_<SERVICE>`), so a handler's boto3 reaches the local AWS the way it
reaches AWS there. When the server has no `AWS_ENDPOINT_URL` of its own, the handler gets
the server's own address (`LOCAL_AWS_ENDPOINT_URL`, set by `local_aws.server.serve`):
inside the local AWS, "AWS" is this server. SageMaker Runtime is always this server, which
evaluates IAM and forwards to the server's `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`
(`local_aws.sagemaker_runtime`).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BOOTSTRAP = Path(__file__).resolve().parent / "lambda_runtime" / "bootstrap.py"
CACHE_DIR_VARIABLE = "LOCAL_AWS_LAMBDA_CACHE"
SERVER_URL_VARIABLE = "LOCAL_AWS_ENDPOINT_URL"
# Warm workers kept per function version (more are started on demand): enough for 16
# concurrent executions without a cold start each, as Lambda keeps environments for minutes.
IDLE_WORKERS_PER_FUNCTION = 16
INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit on the init phase (imports) of a function
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024  # Lambda's limit on an unzipped deployment package
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # Lambda's limit on a synchronous request payload
SYSTEM_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")


class InvokeError(Exception):
    """An Invoke the Lambda service itself refuses (an HTTP error, not a function error)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class FunctionConfig:
    """What identifies a warm worker: a change to any of it means a fresh environment."""

    arn: str
    name: str
    version: str
    handler: str
    code_sha256: str
    timeout: float
    memory_size: int
    environment: tuple[tuple[str, str], ...]
    role: str

    @classmethod
    def of(cls, function: Any) -> FunctionConfig:
        return cls(
            arn=str(function.function_arn),
            name=str(function.function_name),
            version=str(function.version),
            handler=str(function.handler or ""),
            code_sha256=hashlib.sha256(function.code_bytes or b"").hexdigest(),
            timeout=float(function.timeout or 3),
            memory_size=int(function.memory_size or 128),
            environment=tuple(sorted((function.environment_vars or {}).items())),
            role=str(function.role or ""),
        )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or Path.cwd() / ".cache" / "lambda")


def unpack(code: bytes, sha256: str) -> Path:
    """The package unpacked under the cache, once per sha256; never a half-written tree."""
    target = cache_dir() / sha256
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=target.parent))
    try:
        try:
            archive = zipfile.ZipFile(_bytes_io(code))
        except zipfile.BadZipFile as error:
            raise InvokeError(
                "InvalidZipFileException", f"Lambda could not unzip the package: {error}", 502
            ) from error
        with archive:
            total = 0
            for member in archive.infolist():
                total += member.file_size
                destination = (staging / member.filename).resolve()
                if not destination.is_relative_to(staging.resolve()):
                    raise InvokeError(
                        "InvalidZipFileException",
                        f"the package has an entry outside its root: {member.filename!r}",
                        502,
                    )
            if total > MAX_UNZIPPED_BYTES:
                raise InvokeError(
                    "InvalidZipFileException",
                    f"the unzipped package is {total} bytes, over Lambda's "
                    f"{MAX_UNZIPPED_BYTES} byte limit",
                    502,
                )
            archive.extractall(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another invocation unpacked the same code first; theirs is identical.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _bytes_io(data: bytes) -> IO[bytes]:
    import io

    return io.BytesIO(data)


def role_credentials(config: FunctionConfig) -> dict[str, str]:
    """The function's role, assumed by lambda.amazonaws.com for this function, as Lambda
    gives each execution environment: the handler's calls are evaluated against it."""
    from local_aws import iam, service_roles

    try:
        credentials = service_roles.assume_role_for_service(
            config.role, "lambda.amazonaws.com", config.arn, config.name
        )
    except iam.AccessDenied as error:
        # AWS refuses this at CreateFunction already, with these words.
        raise InvokeError(
            "InvalidParameterValueException",
            f"The role defined for the function cannot be assumed by Lambda: {error}",
            400,
        ) from error
    return credentials.environment()


def worker_environment(config: FunctionConfig, code_dir: Path) -> dict[str, str]:
    server = os.environ
    region = config.arn.split(":")[3]  # the function's own region, whatever the server's
    environment = {name: server[name] for name in SYSTEM_VARIABLES if name in server}
    environment.update(role_credentials(config))
    environment.update(
        {name: value for name, value in server.items() if name.startswith("AWS_ENDPOINT_URL")}
    )
    if server.get(SERVER_URL_VARIABLE):
        environment.setdefault("AWS_ENDPOINT_URL", server[SERVER_URL_VARIABLE])
        # SageMaker Runtime is this server too: it evaluates the caller's IAM, then
        # forwards to the local endpoint (local_aws.sagemaker_runtime).
        environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = server[SERVER_URL_VARIABLE]
    environment.update(dict(config.environment))
    # Lambda's reserved variables last: a function cannot override them.
    environment.update(
        {
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_VERSION": config.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[")
            + config.version
            + "]"
            + uuid.uuid4().hex,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LOCAL_AWS_FUNCTION_ARN": config.arn,
            "_HANDLER": config.handler,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


class Worker:
    """One warm execution environment: a bootstrap process and its two pipes."""

    def __init__(self, config: FunctionConfig, code_dir: Path) -> None:
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(BOOTSTRAP)],
            cwd=code_dir,
            env=worker_environment(config, code_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # so a timeout kills whatever the handler started too
        )
        self.ready = False

    def _read_line(self, timeout: float) -> bytes | None:
        """One line from the worker; b"" when it has died, None when silent for `timeout`."""
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], max(0.0, timeout))
        if not readable:
            return None
        return self.process.stdout.readline()

    def invoke(self, event: str, request_id: str) -> tuple[bytes, bool]:
        """(payload, errored) for one invocation, as Lambda returns them."""
        started = time.monotonic()
        if not self.ready:
            ready = self._read_line(max(INIT_TIMEOUT_SECONDS, self.config.timeout))
            if not ready:
                return self._failed(request_id, started, timed_out=ready is None)
            self.ready = True
        assert self.process.stdin is not None
        deadline = time.time() + self.config.timeout
        request = {"request_id": request_id, "event": event, "deadline": deadline}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError:  # a broken pipe: the worker is gone
            return self._failed(request_id, started, timed_out=False)
        line = self._read_line(deadline - time.time())
        if not line:
            return self._failed(request_id, started, timed_out=line is None)
        response = json.loads(line)
        if "error" in response:
            return json.dumps(response["error"]).encode(), True
        return str(response["payload"]).encode(), False

    def _failed(self, request_id: str, started: float, timed_out: bool) -> tuple[bytes, bool]:
        self.kill()
        if timed_out:
            elapsed = time.monotonic() - started
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                f"{min(elapsed, self.config.timeout):.2f} seconds",
            }
        else:
            error = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                f"exit status {self.process.returncode}",
            }
        return json.dumps(error).encode(), True

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()


@dataclass
class Pools:
    """Warm workers by configuration, and in-flight counts by function (for throttling)."""

    idle: dict[FunctionConfig, list[Worker]] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def worker(self, config: FunctionConfig, reserved: int | None) -> Iterator[Worker]:
        with self.lock:
            busy = self.in_flight.get(config.arn, 0)
            if reserved is not None and busy >= reserved:
                raise InvokeError("TooManyRequestsException", "Rate Exceeded.", 429)
            self.in_flight[config.arn] = busy + 1
            idle = self.idle.get(config, [])
            worker = idle.pop() if idle else None
            stale = [c for c in self.idle if c.arn == config.arn and c != config]
            retired = [w for c in stale for w in self.idle.pop(c)]
        for old in retired:  # code or configuration changed: those environments are gone
            old.kill()
        try:
            if worker is None:
                worker = Worker(config, unpack(_code_of(config), config.code_sha256))
            yield worker
        finally:
            with self.lock:
                self.in_flight[config.arn] -= 1
                keep = (
                    worker is not None
                    and worker.alive
                    and len(self.idle.setdefault(config, [])) < IDLE_WORKERS_PER_FUNCTION
                )
                if keep and worker is not None:
                    self.idle[config].append(worker)
            if worker is not None and not keep:
                worker.kill()

    def shutdown(self) -> None:
        with self.lock:
            workers = [w for ws in self.idle.values() for w in ws]
            self.idle.clear()
        for worker in workers:
            worker.kill()


POOLS = Pools()
_CODE: dict[str, bytes] = {}  # sha256 -> package, for the unpack of a new worker


def _code_of(config: FunctionConfig) -> bytes:
    return _CODE[config.code_sha256]


def run(function: Any, body: Any, request_id: str) -> tuple[bytes, bool]:
    """Run `function` (moto's LambdaFunction) on the request body: (payload, errored)."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvokeError(
                "InvalidRequestContentException", "Could not parse request body into json", 400
            ) from error
    event = body or "{}"
    if len(event.encode("utf-8")) > MAX_REQUEST_BYTES:
        raise InvokeError(
            "RequestTooLargeException",
            f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction "
            "operation",
            413,
        )
    try:
        json.loads(event)
    except ValueError as error:
        raise InvokeError(
            "InvalidRequestContentException",
            f"Could not parse request body into json: {error}",
            400,
        ) from error
    if getattr(function, "package_type", "Zip") != "Zip":
        raise InvokeError(
            "InvalidParameterValueException", "the local AWS runs Zip packages only", 400
        )
    config = FunctionConfig.of(function)
    _CODE.setdefault(config.code_sha256, bytes(function.code_bytes or b""))
    reserved = function.reserved_concurrency
    with POOLS.worker(config, None if reserved in (None, "") else int(reserved)) as worker:
        return worker.invoke(event, request_id)


def run_deployed_code() -> None:
    """Make moto's Docker-less Lambda run the deployed code (see the module docstring)."""
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda_simple.models import LambdaSimpleBackend

    def invoke(
        self: LambdaSimpleBackend,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes | None:
        function = self.get_function(function_name, qualifier)
        invocation_type = (headers or {}).get("X-Amz-Invocation-Type", "RequestResponse")
        request_id = str(uuid.uuid4())
        response_headers["x-amzn-RequestId"] = request_id
        response_headers["X-Amz-Executed-Version"] = str(function.version)
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            threading.Thread(
                target=_run_quietly, args=(function, body, request_id), daemon=True
            ).start()
            return b""
        try:
            payload, errored = run(function, body, request_id)
        except InvokeError as error:
            client_error = LambdaClientError(error.code, error.message)
            client_error.code = error.status
            raise client_error from error
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        return payload

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]


def _run_quietly(function: Any, body: Any, request_id: str) -> None:
    # An asynchronous invocation has no caller to report to; Lambda would log the error.
    try:
        run(function, body, request_id)
    except InvokeError as error:
        print(f"local Lambda: async invocation {request_id} refused: {error}", file=sys.stderr)
