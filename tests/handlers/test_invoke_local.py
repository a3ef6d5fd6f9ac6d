"""`sls invoke local -f <function>` with the sample events, as the README tells a user to
run it: the threshold filter on its own, serialize against the local AWS, classify against
a runtime server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest

from handlers.workflow_event import WorkflowEvent
from tests.handlers.conftest import RuntimeServer
from tests.statemachine.packaging import REPO_ROOT, sls

EVENTS = REPO_ROOT / "events"


def result_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The handler's return value: the indented JSON osls prints after the log lines."""
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    start = lines.index("{")
    result: dict[str, Any] = json.loads("\n".join(lines[start:]))
    return result


def log_records(run: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"')]


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_each_sample_event_is_a_workflow_event(path: Path) -> None:
    event = WorkflowEvent.parse(json.loads(path.read_text()))
    assert event.s3_bucket == "scones-unlimited-local"
    # Each sample must be one that serialize serves with its default prefixes.
    assert event.s3_key.startswith(("test/", "train/", "incoming/"))


@pytest.mark.slow  # runs the Serverless CLI (`sls invoke local`)
def test_the_threshold_filter_passes_the_sample_event() -> None:
    run = sls(
        "invoke", "local", "-f", "thresholdFilter", "--path", str(EVENTS / "threshold_filter.json")
    )
    result = result_of(run)
    assert result["statusCode"] == 200
    assert result["body"] == json.loads((EVENTS / "threshold_filter.json").read_text())
    (record,) = log_records(run)
    assert record["message"] == "confidence meets threshold"
    assert record["function"] == "scones-unlimited-dev-thresholdFilter"


@pytest.mark.slow  # runs the Serverless CLI (`sls invoke local`)
def test_the_threshold_filter_stops_a_doubtful_event_with_its_error_name() -> None:
    event = {"s3_key": "test/a.png", "inferences": [0.6, 0.4]}
    run = sls("invoke", "local", "-f", "thresholdFilter", "--data", json.dumps(event))
    assert run.returncode != 0
    assert "THRESHOLD_CONFIDENCE_NOT_MET" in run.stdout + run.stderr


def test_serialize_reads_from_the_local_aws(
    local_aws: dict[str, str], unique_name: str, png_image: bytes
) -> None:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    boto3.client("s3").put_object(Bucket=unique_name, Key="test/bike_s_000658.png", Body=png_image)
    event = {**json.loads((EVENTS / "serialize.json").read_text()), "s3_bucket": unique_name}
    run = sls(
        "invoke",
        "local",
        "-f",
        "serialize",
        "--param",
        f"bucket={unique_name}",
        "--data",
        json.dumps(event),
        extra_env=local_aws,
    )
    body = result_of(run)["body"]
    assert body["s3_key"] == "test/bike_s_000658.png"
    assert WorkflowEvent.parse(body).image_data
    assert log_records(run)[0]["bytes"] == len(png_image)


def test_serialize_refuses_a_bucket_that_is_not_the_stages(local_aws: dict[str, str]) -> None:
    run = sls(
        "invoke",
        "local",
        "-f",
        "serialize",
        "--param",
        "bucket=some-other-bucket",
        "--path",
        str(EVENTS / "serialize.json"),
        extra_env=local_aws,
    )
    assert run.returncode != 0
    assert "BucketNotAllowed" in run.stdout + run.stderr


@pytest.mark.slow  # runs the Serverless CLI (`sls invoke local`)
def test_classify_calls_the_endpoint_named_by_the_endpoint_param(
    endpoint: RuntimeServer, unique_name: str
) -> None:
    name = unique_name
    run = sls(
        "invoke",
        "local",
        "-f",
        "classify",
        "--param",
        f"endpoint={name}",
        "--path",
        str(EVENTS / "classify.json"),
        extra_env={"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint.url},
    )
    result = result_of(run)
    assert result["body"]["inferences"] == [0.973, 0.027]
    assert endpoint.requests[-1]["endpoint"] == name
    assert endpoint.requests[-1]["content_type"] == "image/png"
