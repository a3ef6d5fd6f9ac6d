"""The main job, reduced (one epoch), end to end on a fresh local AWS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, SHARED_ARCHIVE, free_port


def test_the_demo_runs_end_to_end_and_stops_what_it_started(
    shared_data: Path, tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "state"
    environment = {**os.environ, "SCONES_CIFAR_SOURCE": str(SHARED_ARCHIVE)}
    for name in [name for name in environment if name.startswith("AWS_")]:
        del environment[name]  # the demo must set up its own local AWS, not reuse ours
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "local_aws",
            "--state-dir",
            str(state),
            "demo",
            "--port",
            str(port),
            "--epochs",
            "1",
            "--bucket",
            "demo-test-bucket",
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("==> summary", 1)[1]
    accuracy = float(summary.split("test accuracy", 1)[1].split()[0])
    assert 0.5 <= accuracy <= 1.0
    assert not (state / "aws.pid").exists(), "the demo left the local AWS running"
