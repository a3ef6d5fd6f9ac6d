"""The endpoint's server process (local_aws/endpoint/server.py, connections.py) and its
supervision through `deploy --mode local`: slow request heads are timed out, a stop
answers the request it is reading instead of 408, readiness is the new process's own,
and one endpoint name is one process."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from local_aws.endpoint.background import RunningEndpoint, local_endpoint
from tests.conftest import free_port
from tests.local_aws.endpoint_helpers import Model, deploy

HEADER_TIMEOUT = "1"


OPTIONS = ["--workers", "1", "--torch-threads", "1", "--header-timeout-seconds", HEADER_TIMEOUT]


@pytest.fixture
def endpoint_process(model: Model, tmp_path: Path) -> Iterator[RunningEndpoint]:
    """`python -m local_aws.endpoint`, one worker, no capture, a one-second head timeout:
    for a test that stops it."""
    with local_endpoint(model.model_dir, tmp_path, OPTIONS) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def shared_endpoint(
    model: Model,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningEndpoint]:
    """The same endpoint, started once for the tests that only connect to it (each on
    connections of its own): an endpoint's start is most of such a test's time."""
    with local_endpoint(model.model_dir, tmp_path_factory.mktemp("served"), OPTIONS) as endpoint:
        yield endpoint


def _read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_a_slowly_sent_request_head_is_answered_408_and_closed(
    shared_endpoint: RunningEndpoint,
) -> None:
    port = shared_endpoint.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        connection.settimeout(0.2)
        answer = b""
        # A header byte every 0.2 s: without a deadline for the head this goes on for good.
        for _ in range(300):
            try:
                connection.sendall(b"X")
                answer = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # closed after the answer
                break
            break
        connection.settimeout(30)
        answer += _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"RequestTimeout" in answer


def test_a_connection_that_sends_nothing_is_closed(
    shared_endpoint: RunningEndpoint,
) -> None:
    port = shared_endpoint.port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        assert _read_until_closed(connection).startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_still_serves_its_next_request(
    shared_endpoint: RunningEndpoint,
    model: Model,
) -> None:
    port = shared_endpoint.port
    session = requests.Session()
    url = f"http://127.0.0.1:{port}/invocations"
    headers = {"Content-Type": "image/png"}
    assert session.post(url, data=model.pngs[0], headers=headers, timeout=30).status_code == 200
    time.sleep(float(HEADER_TIMEOUT) * 1.5)  # idle between requests is not a slow head
    assert session.post(url, data=model.pngs[1], headers=headers, timeout=30).status_code == 200


def test_sigterm_answers_the_request_whose_body_is_still_arriving(
    endpoint_process: RunningEndpoint,
    model: Model,
) -> None:
    """The reported defect: a stop under keep-alive load took ~31 s and answered fully
    sent requests 408, because reading stopped at SIGTERM."""
    pid, port = endpoint_process.pid, endpoint_process.port
    body = model.pngs[0]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        # The server answers "100 Continue" once the request is in its hands.
        assert connection.recv(1024).startswith(b"HTTP/1.1 100")
        connection.sendall(body[: len(body) // 2])
        os.kill(pid, signal.SIGTERM)
        _wait_until_refused(port)  # the stop is under way: nothing new is accepted
        connection.sendall(body[len(body) // 2 :])
        answer = _read_until_closed(connection)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"Connection: close" in head
    assert payload.startswith(b"[")
    # This process started it: its exit status is ours to read.
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _wait_until_refused(port: int) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the probe reached the backlog of a listening socket that closed before
            # accepting it (seen once in a whole-suite run); it was not accepted either.
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still accepts connections")


def _deploy_args(model: Model, state_dir: Path, name: str, port: int) -> list[str]:
    return [
        "--bucket", model.bucket, "--endpoint-name", name, "--port", str(port),
        "--state-dir", str(state_dir), "--parameter-name", f"/test/{name}/endpoint-name",
        "--capture-sampling", "0", "--model-group", model.group,
    ]  # fmt: skip


def test_deploy_on_a_port_another_server_answers_fails_naming_it(
    model: Model,
    tmp_path: Path,
) -> None:
    """The reported defect: deploy accepted any server's /ping, exited 0 and published
    the parameter while its own process had died with "cannot listen"."""
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_http(port)
        result = deploy(*_deploy_args(model, tmp_path, "squatted", port))
    finally:
        other.terminate()
        other.wait(10)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and f"pid {other.pid}" in result.stderr
    with pytest.raises(ClientError):
        boto3.client("ssm").get_parameter(Name="/test/squatted/endpoint-name")


def test_two_concurrent_deploys_of_one_name_start_one_endpoint(
    model: Model,
    tmp_path: Path,
) -> None:
    ports = [free_port(), free_port()]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda port: deploy(*_deploy_args(model, tmp_path, "twice", port)), ports)
        )
    try:
        assert sorted(result.returncode for result in results) == [0, 1]
        refused = next(result for result in results if result.returncode == 1)
        assert "already running" in refused.stderr
    finally:
        stopped = deploy("--endpoint-name", "twice", "--state-dir", str(tmp_path), "--stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    for port in ports:  # nothing of either deploy is left listening
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/ping", timeout=2)


def _wait_for_http(port: int) -> None:
    for _ in range(600):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered on port {port}")


def test_the_process_started_is_the_one_deploy_reports(model: Model, tmp_path: Path) -> None:
    port = free_port()
    started = deploy(*_deploy_args(model, tmp_path, "reported", port))
    try:
        assert started.returncode == 0, started.stderr
        pid = int((tmp_path / "reported.pid").read_text())
        assert f"pid {pid}" in started.stdout
        assert b"local_aws.endpoint" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert os.getsid(pid) == pid  # a session of its own: --stop ends all of it
    finally:
        stopped = deploy("--endpoint-name", "reported", "--state-dir", str(tmp_path), "--stop")
    assert stopped.returncode == 0
