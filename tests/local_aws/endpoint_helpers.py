"""The local endpoint started and stopped as users do it (`deploy --mode local`), requests
to it over real HTTP, and the capture records it wrote (test_endpoint_app.py and the other
test_endpoint_*.py modules)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests

from tests.conftest import REPO_ROOT, free_port
from training_job.serving import capture


@dataclass(frozen=True)
class Model:
    bucket: str
    model_dir: Path
    pngs: list[bytes]
    group: str  # the model group where it is an approved version


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    bucket: str
    state_dir: Path
    parameter: str


def deploy(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training_job", "deploy", "--mode", "local", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start(model: Model, state_dir: Path, name: str, *options: str) -> Endpoint:
    port = free_port()
    parameter = f"/test/{name}/endpoint-name"
    started = deploy(
        "--bucket", model.bucket, "--endpoint-name", name, "--port", str(port),
        "--state-dir", str(state_dir), "--parameter-name", parameter,
        "--capture-flush-seconds", "0.5", "--model-group", model.group, *options,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    return Endpoint(name, f"http://127.0.0.1:{port}", model.bucket, state_dir, parameter)


def stop(endpoint: Endpoint) -> None:
    stopped = deploy(
        "--endpoint-name", endpoint.name, "--state-dir", str(endpoint.state_dir),
        "--parameter-name", endpoint.parameter, "--stop",
    )  # fmt: skip
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout


def post(url: str, body: bytes, content_type: str | None = "image/png") -> requests.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return requests.post(f"{url}/invocations", data=body, headers=headers, timeout=30)


def captured_records(bucket: str, endpoint_name: str) -> list[capture.CaptureRecord]:
    s3 = boto3.client("s3")
    prefix = f"{capture.CAPTURE_PREFIX}/{endpoint_name}/"
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            assert item["Key"].endswith(".jsonl")
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            assert body.endswith("\n")
            records += [capture.parse_line(line) for line in body.splitlines()]
    return records
