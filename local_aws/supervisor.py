"""Local background processes (the local AWS, local endpoints): start, prove ready, stop.

One way for every daemon local mode runs, so each gets the same guarantees:

- One name, one process. `Daemon.claim` takes an exclusive `flock` on STATE_DIR/NAME.lock
  before anything is started; the started process inherits that lock and holds it for as
  long as it lives. A second start of the same name fails, whichever command tries it,
  and whether a daemon runs is read from the lock, not from a pid the system may reuse.
- A taken port is an error that names who holds it (pid and command, when /proc shows them).
  The free-port probe sets SO_REUSEADDR, as the servers' own listeners do, so connections
  left in TIME_WAIT by a stop under traffic do not block an immediate restart.
- Ready means the process just started is the one answering: every listening socket on the
  port belongs to a process of its session (it is started in a session of its own) and its
  health URL answers 200. Another server answering on the port is never taken for it.
- `stop` sends SIGTERM (the daemons stop cleanly on it), waits for the lock to be released,
  and only after the timeout kills the process group.

Linux only (/proc and flock), as local mode is.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

READY_POLL_SECONDS = 0.1
LISTEN_STATE = "0A"  # TCP_LISTEN in /proc/net/tcp


class SupervisorError(Exception):
    """A daemon that cannot be started or stopped, with a message for the user."""


class AlreadyRunning(SupervisorError):
    pass


class PortTaken(SupervisorError):
    pass


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == LISTEN_STATE:
                inodes.add(fields[9])
    return inodes


def listening_pids(port: int) -> set[int]:
    """The processes with a listening TCP socket on `port` (those this user may inspect)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    pids: set[int] = set()
    if not wanted:
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.add(int(proc.name))
                    break
        except OSError:  # gone meanwhile, or another user's
            continue
    return pids


def describe_process(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(part.decode(errors="replace") for part in argv)
    return f"pid {pid} ({command[:200]})"


def port_holders(port: int) -> str:
    """Who listens on `port`, for an error message."""
    pids = listening_pids(port)
    if not pids:
        return "a process this user cannot see"
    return ", ".join(describe_process(pid) for pid in sorted(pids))


def check_port_free(host: str, port: int) -> None:
    """Raise PortTaken, naming the holder, unless a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers' own listeners: connections in TIME_WAIT do not make a port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortTaken(
                f"cannot listen on {host}:{port}: {error.strerror}; held by {port_holders(port)}"
            ) from error


def _session_id(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[3])


def _lock_is_held(lock_file: Path) -> bool:
    if not lock_file.exists():
        return False
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@dataclass(frozen=True)
class Readiness:
    """How to know the daemon serves: its listening port and a URL path answering 200."""

    host: str
    port: int
    health_path: str
    timeout_seconds: float

    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.health_path}"


class Daemon:
    """A named background process with its files in `state_dir`: NAME.pid, NAME.log and
    NAME.lock (kept; deleting a lock file while it may be held would allow two holders)."""

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = state_dir / f"{name}.log"
        self.lock_file = state_dir / f"{name}.lock"

    def is_running(self) -> bool:
        return _lock_is_held(self.lock_file)

    def pid(self) -> int | None:
        """The running daemon's pid; None when none runs (a stale pid file is ignored)."""
        if not self.is_running():
            return None
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @contextmanager
    def claim(self) -> Iterator[Claim]:
        """Hold the name while a daemon is prepared and started; AlreadyRunning if taken."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = self.lock_file.open("a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = self.pid()
                holder = describe_process(pid) if pid is not None else "a starting process"
                raise AlreadyRunning(f"{self.name} is already running: {holder}") from None
            self.pid_file.unlink(missing_ok=True)  # whatever it says is stale now
            yield Claim(self, handle.fileno())
        finally:
            handle.close()  # the started daemon keeps the lock through its inherited copy

    def stop(self, timeout_seconds: float) -> str:
        """SIGTERM, wait for the daemon to let go of its name, then SIGKILL its process
        group if it has not; returns what happened, for the user."""
        pid = self.pid()
        if pid is None:
            if self.is_running():
                raise SupervisorError(f"{self.name} is starting (no pid yet); try again")
            self.pid_file.unlink(missing_ok=True)
            return "not running"
        os.kill(pid, signal.SIGTERM)
        outcome = "stopped"
        if not self._wait_released(timeout_seconds):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_released(10.0)
            outcome = f"did not stop in {timeout_seconds:.0f}s and was killed"
        self.pid_file.unlink(missing_ok=True)
        return outcome

    def _wait_released(self, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while self.is_running():
            if time.monotonic() > deadline:
                return False
            time.sleep(READY_POLL_SECONDS)
        return True


class Claim:
    """A held name: start the daemon under it, or serve in this process (`hold_here`)."""

    def __init__(self, daemon: Daemon, lock_fd: int) -> None:
        self.daemon = daemon
        self.lock_fd = lock_fd

    def hold_here(self) -> None:
        """This process is the daemon (a foreground run): `stop` signals it."""
        self.daemon.pid_file.write_text(f"{os.getpid()}\n")

    def start(
        self,
        argv: Sequence[str],
        readiness: Readiness,
        environment: Mapping[str, str] | None = None,
    ) -> int:
        """Start `argv` in a session of its own, logging to NAME.log, and return its pid
        once it is ready; on failure it is stopped and SupervisorError says why."""
        check_port_free(readiness.host, readiness.port)
        daemon = self.daemon
        with daemon.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(environment) if environment is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command; `stop` ends it
                pass_fds=(self.lock_fd,),  # it holds the name for as long as it lives
            )
        daemon.pid_file.write_text(f"{process.pid}\n")
        try:
            _wait_until_ready(process, readiness, daemon)
        except BaseException:
            _end(process)
            daemon.pid_file.unlink(missing_ok=True)
            raise
        return process.pid


@contextmanager
def supervised(
    daemon: Daemon,
    argv: Sequence[str],
    readiness: Readiness,
    environment: Mapping[str, str] | None = None,
    stop_timeout_seconds: float = 60.0,
) -> Iterator[int]:
    """`argv` started under `daemon`'s name for the length of a `with` block (tests,
    benchmarks, the demo): yields its pid once ready, and stops it on the way out."""
    with daemon.claim() as claim:
        pid = claim.start(argv, readiness, environment)
    try:
        yield pid
    finally:
        daemon.stop(stop_timeout_seconds)


def _end(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_until_ready(
    process: subprocess.Popen[bytes], readiness: Readiness, daemon: Daemon
) -> None:
    deadline = time.monotonic() + readiness.timeout_seconds
    url = readiness.url()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SupervisorError(
                f"{daemon.name} exited with status {process.returncode} before it was ready; "
                f"see {daemon.log_file}"
            )
        listeners = listening_pids(readiness.port)
        ours = {pid for pid in listeners if _session_id(pid) == process.pid}
        if listeners - ours:
            # Ours cannot be the only one answering: a request might reach the other.
            raise PortTaken(
                f"{daemon.name}: another process listens on port {readiness.port}: "
                f"{', '.join(describe_process(pid) for pid in sorted(listeners - ours))}"
            )
        if ours:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
        time.sleep(READY_POLL_SECONDS)
    raise SupervisorError(
        f"{daemon.name} did not answer {url} in {readiness.timeout_seconds:.0f}s; "
        f"see {daemon.log_file}"
    )
