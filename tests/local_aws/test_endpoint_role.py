"""The local endpoint acts as the SageMaker execution role (`deploy --mode local --role`),
made from docs/iam/ as the README makes it: the role's policy is what lets its captures
land, and its trust policy is what lets SageMaker assume it for the endpoint."""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest
import requests

from tests.conftest import free_port
from tests.local_aws.endpoint_helpers import (
    Model,
    captured_records,
    deploy,
    post,
)
from training_job.demo.sagemaker_role import create_sagemaker_role

CAPTURE_STATEMENT = "WriteModelsAndCapturedTraffic"  # s3:PutObject on data_capture/*
WAIT_SECONDS = 60.0


def _metrics(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _wait_for_metric(url: str, name: str) -> dict[str, float]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        values = _metrics(url)
        if values.get(name, 0) > 0:
            return values
        time.sleep(0.2)
    raise AssertionError(f"{name} stayed 0 for {WAIT_SECONDS:.0f}s: {_metrics(url)}")


def _role(model: Model, name: str, without: tuple[str, ...] = (), region: str = "") -> str:
    session = boto3.session.Session()
    return create_sagemaker_role(
        session.client("iam"),
        model.bucket,
        region or session.region_name,
        session.client("sts").get_caller_identity()["Account"],
        without=without,
        name=name,
    )


def _start(model: Model, state_dir: Path, name: str, role: str) -> str:
    port = free_port()
    started = deploy(
        "--bucket", model.bucket, "--endpoint-name", name, "--port", str(port),
        "--state-dir", str(state_dir), "--parameter-name", f"/test/{name}/endpoint-name",
        "--workers", "1", "--torch-threads", "1", "--capture-flush-seconds", "0.5",
        "--role", role, "--model-group", model.group,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"the endpoint acts as {role}" in started.stdout
    return f"http://127.0.0.1:{port}"


def _stop(state_dir: Path, name: str) -> None:
    stopped = deploy("--endpoint-name", name, "--state-dir", str(state_dir), "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_captures_need_the_execution_policys_capture_statement(
    model: Model,
    tmp_path: Path,
) -> None:
    """Without the statement that allows s3:PutObject on data_capture/*, every capture
    write is AccessDenied (the spool keeps the records and counts the failures); once the
    role has the whole policy again, the same records land."""
    name = "role-capture"
    role = _role(model, "EndpointRoleWithoutCaptures", without=(CAPTURE_STATEMENT,))
    url = _start(model, tmp_path, name, role)
    try:
        for png in model.pngs[:3]:
            assert post(url, png).status_code == 200
        refused = _wait_for_metric(url, "endpoint_capture_put_failures_total")
        assert refused.get("endpoint_capture_records_written_total", 0) == 0
        assert refused["endpoint_capture_spool_bytes"] > 0  # kept, not lost
        log = (tmp_path / f"{name}.log").read_text()
        assert "AccessDenied" in log and "/data_capture/" in log
        assert captured_records(model.bucket, name) == []

        _role(model, "EndpointRoleWithoutCaptures")  # the whole policy, from docs/iam/
        landed = _wait_for_metric(url, "endpoint_capture_records_written_total")
        assert landed["endpoint_capture_records_written_total"] == 3
    finally:
        _stop(tmp_path, name)
    assert len(captured_records(model.bucket, name)) == 3


def test_the_model_is_read_with_the_role(model: Model, tmp_path: Path) -> None:
    """SageMaker reads model.tar.gz with the execution role: without s3:GetObject on
    models/* the deploy fails with AccessDenied and starts nothing."""
    role = _role(model, "EndpointRoleWithoutModels", without=("ReadTrainingDataAndModels",))
    result = deploy(
        "--bucket", model.bucket, "--endpoint-name", "role-model", "--port", str(free_port()),
        "--state-dir", str(tmp_path), "--role", role, "--model-group", model.group,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot download" in result.stderr and "403" in result.stderr
    assert not (tmp_path / "role-model.pid").exists()


@pytest.mark.parametrize("problem", ["another region", "no such role"])
def test_a_role_sagemaker_may_not_assume_for_the_endpoint_is_refused(
    model: Model,
    tmp_path: Path,
    problem: str,
) -> None:
    """The trust policy names this account's SageMaker in this region (aws:SourceArn):
    a role made for another region, or a missing one, is refused before anything starts."""
    if problem == "another region":
        role = _role(model, "EndpointRoleOfEuWest1", region="eu-west-1")
        expected = "sagemaker.amazonaws.com is not trusted by"
    else:
        role = "arn:aws:iam::123456789012:role/NoSuchSageMakerRole"
        expected = "no such role"
    result = deploy(
        "--bucket", model.bucket, "--endpoint-name", "role-trust", "--port", str(free_port()),
        "--state-dir", str(tmp_path), "--role", role, "--model-group", model.group,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"--role {role}" in result.stderr and expected in result.stderr
    assert not (tmp_path / "role-trust.pid").exists()
