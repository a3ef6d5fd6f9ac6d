"""`python -m local_aws.endpoint` in the background, for the length of a `with` block.

The one way the tests and the benchmarks serve a model directory on its own (deploy's
`--mode local` adds S3, the SSM parameter and the baseline on top): under
local_aws.supervisor, as `local_aws.server.local_aws_server` runs the local AWS, so it
is ready only once the process started here answers /ping on its port, a second
endpoint of the same name in the same state directory is refused, and it is stopped
with SIGTERM (captures flushed) on the way out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local_aws.server import DEFAULT_HOST, free_port, with_source_on_path
from local_aws.supervisor import Daemon, Readiness, supervised

HEALTH_PATH = "/ping"
# Loading the model and starting the workers takes seconds; on a busy machine, minutes.
READY_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 90.0  # a clean stop first ships every spooled capture record


@dataclass(frozen=True)
class RunningEndpoint:
    port: int
    pid: int  # the server's; its workers are its children, in its process group
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://{DEFAULT_HOST}:{self.port}"


def endpoint_argv(model_dir: Path, port: int, options: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "local_aws.endpoint", "--model-dir", str(model_dir),
        "--host", DEFAULT_HOST, "--port", str(port), *options,
    ]  # fmt: skip


@contextmanager
def local_endpoint(
    model_dir: Path,
    state_dir: Path,
    options: Sequence[str] = (),
    *,
    name: str = "endpoint",
    port: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[RunningEndpoint]:
    """Serve `model_dir` with `python -m local_aws.endpoint OPTIONS` (its own flags:
    --workers, --capture-bucket, ...) on `port` (default: a free one), its pid and log
    files named `name` in `state_dir`. Its environment is this process's plus
    `environment` (the local AWS's client variables, for capture)."""
    port = free_port() if port is None else port
    daemon = Daemon(name, state_dir)
    with supervised(
        daemon,
        endpoint_argv(model_dir, port, options),
        Readiness(DEFAULT_HOST, port, HEALTH_PATH, READY_TIMEOUT_SECONDS),
        with_source_on_path({**os.environ, **(environment or {})}),
        STOP_TIMEOUT_SECONDS,
    ) as pid:
        yield RunningEndpoint(port, pid, daemon.log_file)
