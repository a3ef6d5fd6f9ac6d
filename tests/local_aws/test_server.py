"""The local AWS answers boto3 on loopback, and `up`/`down` manage it as a daemon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import requests

from tests.conftest import REPO_ROOT, free_port


def test_boto3_reaches_the_local_aws_through_the_endpoint_variable(
    local_aws: dict[str, str], unique_name: str
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert unique_name in names
    assert local_aws["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_up_writes_the_env_file_and_down_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    run = [sys.executable, "-m", "local_aws", "--state-dir", str(state)]
    subprocess.run([*run, "up", "--port", str(port)], cwd=REPO_ROOT, check=True, timeout=90)
    try:
        env_lines = (state / "aws.env").read_text().splitlines()
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in env_lines
        assert requests.get(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=5).ok
        # A second `up` is a no-op, not a second server.
        again = subprocess.run(
            [*run, "up", "--port", str(port)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "already running" in again.stdout
    finally:
        subprocess.run([*run, "down"], cwd=REPO_ROOT, check=True, timeout=30)
    assert not (state / "aws.env").exists()
    try:
        requests.get(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2)
        still_up = True
    except requests.ConnectionError:
        still_up = False
    assert not still_up
