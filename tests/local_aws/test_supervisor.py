"""local_aws/supervisor.py, with real processes and ports: one name is one process, a taken
port is an error naming its holder, readiness is the new process's own, a restart right
after a stop under traffic works, and a stale pid is never signalled."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local_aws import supervisor
from tests.conftest import REPO_ROOT, free_port

TIME_WAIT = "06"  # in /proc/net/tcp


def http_server(port: int) -> list[str]:
    """A small real server that answers 200 on / and closes each connection itself."""
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def readiness(port: int) -> supervisor.Readiness:
    return supervisor.Readiness("127.0.0.1", port, "/", timeout_seconds=60)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[supervisor.Daemon]:
    daemon = supervisor.Daemon("web", tmp_path)
    yield daemon
    if daemon.is_running():
        daemon.stop(10)


def test_one_name_is_one_process(daemon: supervisor.Daemon) -> None:
    port = free_port()
    with daemon.claim() as claim:
        # While the first start is under way, a second is refused at once.
        with pytest.raises(supervisor.AlreadyRunning), daemon.claim():
            pass
        pid = claim.start(http_server(port), readiness(port))
    # The command that started it has let go; the daemon itself holds the name.
    assert daemon.is_running() and daemon.pid() == pid
    with pytest.raises(supervisor.AlreadyRunning, match=f"pid {pid}"), daemon.claim():
        pass
    assert daemon.stop(10) == "stopped"
    assert not daemon.is_running() and not daemon.pid_file.exists()
    with daemon.claim() as claim:  # free again
        claim.start(http_server(port), readiness(port))


def test_a_taken_port_is_an_error_naming_its_holder(daemon: supervisor.Daemon) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(supervisor.PortTaken) as taken, daemon.claim() as claim:
            claim.start(http_server(port), readiness(port))
    assert f"127.0.0.1:{port}" in str(taken.value)
    assert f"pid {os.getpid()}" in str(taken.value)  # this test process holds it
    assert not daemon.is_running() and not daemon.pid_file.exists()


def test_another_server_answering_on_the_port_is_not_taken_for_ours(
    daemon: supervisor.Daemon,
) -> None:
    """The reported defect: the readiness check accepted any server's answer."""
    port = free_port()
    other = subprocess.Popen(http_server(port), stderr=subprocess.DEVNULL)
    try:
        _wait_for_answer(port)
        with pytest.raises(supervisor.PortTaken, match=f"pid {other.pid}"), daemon.claim() as claim:
            claim.start(http_server(port), readiness(port))
    finally:
        other.terminate()
        other.wait(10)
    assert not daemon.is_running()


def test_a_daemon_that_dies_before_it_is_ready_is_reported(daemon: supervisor.Daemon) -> None:
    port = free_port()
    dies = [sys.executable, "-c", "raise SystemExit(3)"]
    with (
        pytest.raises(supervisor.SupervisorError, match="exited with status 3"),
        daemon.claim() as claim,
    ):
        claim.start(dies, readiness(port))
    assert not daemon.is_running() and not daemon.pid_file.exists()


def test_a_restart_right_after_a_stop_under_traffic_works(daemon: supervisor.Daemon) -> None:
    port = free_port()
    with daemon.claim() as claim:
        claim.start(http_server(port), readiness(port))
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{port}/", timeout=5)

    clients = [threading.Thread(target=traffic) for _ in range(4)]
    for client in clients:
        client.start()
    _wait_for_answer(port)
    assert daemon.stop(10) == "stopped"
    stop.set()
    for client in clients:
        client.join()
    # The server closed its connections first: they wait in TIME_WAIT on its port.
    assert _has_time_wait(port)
    with daemon.claim() as claim:
        claim.start(http_server(port), readiness(port))
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200


def test_a_stale_pid_file_is_never_signalled(daemon: supervisor.Daemon) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        daemon.pid_file.write_text(f"{bystander.pid}\n")  # left by a daemon long gone
        assert daemon.stop(5) == "not running"
        assert bystander.poll() is None
        assert not daemon.pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_local_aws_up_on_a_taken_port_fails_and_writes_no_env_file(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "local_aws", "--state-dir", str(tmp_path), "up",
             "--port", str(port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and f"pid {os.getpid()}" in result.stderr
    assert not (tmp_path / "aws.env").exists()


def _wait_for_answer(port: int) -> None:
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on port {port}")


def _has_time_wait(port: int) -> bool:
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(
        int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == TIME_WAIT
        for line in lines
    )
