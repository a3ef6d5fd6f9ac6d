"""`python -m training_job review`: its usage errors, and the real command serving the page."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO_ROOT, free_port, interruptible
from tests.training_job.review.conftest import ReviewWorld
from training_job.__main__ import main


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bucket", "b"], "pass --table or set DECISIONS_TABLE"),
        (["--bucket", "b", "--table", "t", "--host", "0.0.0.0"], "not a loopback address"),
        (["--bucket", "b", "--table", "t", "--host", "example.com"], "not a loopback address"),
        (["--bucket", "b", "--table", "t", "--port", "70000"], "not a port"),
        (["--bucket", "b", "--table", "t", "--reviewer", "a b"], "--reviewer"),
        (["--bucket", "b", "--table", "t", "--reviewer", "x" * 65], "--reviewer"),
    ],
)
def test_a_command_line_that_cannot_run_is_a_usage_error(
    arguments: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DECISIONS_TABLE", raising=False)
    try:
        code = main(["review", *arguments, "--region", "us-east-1"])
    except SystemExit as exited:  # refused by the parser (a number out of its range)
        code = exited.code
    assert code == 2
    error = capsys.readouterr().err.splitlines()[-1]  # argparse prints its usage first
    assert error.startswith("python -m training_job review: error: ")
    assert message in error


def test_a_missing_table_is_named(world: ReviewWorld, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["review", "--bucket", world.bucket, "--table", "no-such-table",
                 "--reviewer", "carol", "--port", "0"])  # fmt: skip
    assert code == 1
    assert "no decisions table 'no-such-table'" in capsys.readouterr().err


def test_a_bucket_in_another_region_is_refused(
    world: ReviewWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    # The region rule `--region` states (issue 24 item 9), checked before the table.
    code = main(["review", "--bucket", world.bucket, "--table", world.table,
                 "--reviewer", "carol", "--port", "0", "--region", "eu-west-1"])  # fmt: skip
    assert code == 1
    assert "is in us-east-1, but this command runs in eu-west-1" in capsys.readouterr().err


def test_the_command_serves_the_queue_until_interrupted(
    world: ReviewWorld, local_aws: dict[str, str]
) -> None:
    port = free_port()
    environment = {**os.environ, **local_aws, "DECISIONS_TABLE": world.table}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training_job",
            "review",
            "--bucket",
            world.bucket,
            "--port",
            str(port),
            "--reviewer",
            "carol",
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"{len(world.photos)} photos wait for review" in banner
        assert f"http://127.0.0.1:{port}/" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/next", timeout=30) as response:
            answer = json.load(response)
        assert answer["reviewer"] == "carol"
        assert answer["item"]["image"] == world.photos[0].image
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:  # it did not stop: end it, so its output can be read
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
