"""The local AWS answers boto3 on loopback; `up`/`down` manage it as a daemon, and
`local_aws_server` for the length of a `with` block."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests

from local_aws.server import local_aws_server, local_client
from local_aws.supervisor import AlreadyRunning
from tests.conftest import REPO_ROOT, free_port


def test_boto3_reaches_the_local_aws_through_the_endpoint_variable(
    local_aws: dict[str, str], unique_name: str
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert unique_name in names
    assert local_aws["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


@pytest.mark.slow  # starts a local AWS (`local_aws up`)
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


@pytest.mark.slow  # starts a local AWS
def test_local_aws_server_serves_for_its_block_from_any_directory_and_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `-m local_aws` must not depend on the working directory
    state = tmp_path / "state"
    with local_aws_server(state, free_port()) as server:
        s3 = local_client(server.client_environment(), "s3")
        s3.create_bucket(Bucket="served")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["served"]
        assert (state / "aws.pid").read_text().strip() == str(server.pid)
        # One server per state dir, whoever starts the second.
        with pytest.raises(AlreadyRunning), local_aws_server(state, free_port()):
            pass
    assert not (state / "aws.pid").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/moto-api/data.json", timeout=2)
