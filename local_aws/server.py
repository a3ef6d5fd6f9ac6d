"""The local AWS: moto's server on 127.0.0.1, configured the way this project needs it
(local_aws/moto_patches.py: every change to moto), started, found and stopped.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config

from local_aws import lambda_executor, moto_patches, moto_speedups, serving_image
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
    moto_patches.install_all()  # every change to moto, before the first request
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
    moto_speedups.answer_own_requests_in_process(server._server.app, host, port)  # type: ignore[union-attr]
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
