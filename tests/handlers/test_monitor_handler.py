"""The scheduled monitor against the local AWS: reads new captures once, publishes metrics."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest

from handlers import monitor
from handlers.workflow_event import ConfigurationError
from training_job import capture

PREFIX = "data_capture/ep/"
BASELINE = {
    "classes": ["bicycle", "motorcycle"],
    "confidence_threshold": 0.93,
    "confidences": [0.95 + 0.001 * i for i in range(40)],
    "class_counts": {"bicycle": 20, "motorcycle": 20},
}


def lines(outputs: list[list[float]], minute: int) -> bytes:
    when = datetime(2026, 11, 24, 9, minute, tzinfo=UTC)
    return capture.encode_lines(
        [
            capture.build_record(
                input_body=b"\x89PNG fake",
                input_content_type="image/png",
                output_body=json.dumps(o).encode(),
                output_content_type="application/json",
                inference_time=when,
            )
            for o in outputs
        ]
    )


@pytest.fixture
def capture_bucket(
    local_aws: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(
        Bucket=unique_name,
        Key="models/job/output/baseline.json",
        Body=json.dumps(BASELINE).encode(),
    )
    for name, value in {
        "CAPTURE_BUCKET": unique_name,
        "CAPTURE_PREFIX": PREFIX,
        "ENDPOINT_NAME": unique_name,
        "BASELINE_KEY": "models/job/output/baseline.json",
        "SETTLE_SECONDS": "0",
        "METRIC_NAMESPACE": f"Test/{unique_name}",
    }.items():
        monkeypatch.setenv(name, value)
    yield unique_name


def put(bucket: str, minute: int, body: bytes) -> None:
    key = f"{PREFIX}AllTraffic/2026/11/24/09/{minute:02d}-00-000-x.jsonl"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def published(bucket: str) -> set[str]:
    cloudwatch = boto3.client("cloudwatch")
    result = cloudwatch.list_metrics(Namespace=f"Test/{bucket}")["Metrics"]
    return {m["MetricName"] for m in result}


def test_reads_new_captures_counts_damage_and_publishes_metrics(capture_bucket: str) -> None:
    good = [[0.99, 0.01]] * 15 + [[0.4, 0.6]] * 15  # half below 0.93, all confident before
    body = lines(good[:20], 1) + b'{"captureData": {"endpointOutput": 7}}\n' + b"not json\n"
    put(capture_bucket, 1, body + lines(good[20:21], 1)[:40])  # cut short: truncated last line
    put(capture_bucket, 2, gzip.compress(lines(good[20:], 2)))
    put(capture_bucket, 3, lines([[0.2, 0.3, 0.5]], 3))  # another model version's shape
    summary = monitor.handler({}, None)
    assert summary["objects"] == 3
    assert summary["records"] == 30
    assert summary["damaged"] == 4
    assert summary["metrics"]["LowConfidenceRate"] == pytest.approx(0.5)
    assert summary["metrics"]["ConfidenceDrift"] > 1.0
    assert summary["metrics"]["ClassMixShift"] == pytest.approx(0.0)
    assert {
        "CapturedRecords",
        "DamagedRecords",
        "LowConfidenceRate",
        "ClassShare",
        "ClassMixShift",
        "ConfidenceDrift",
    } <= published(capture_bucket)


def test_each_object_is_read_once(capture_bucket: str) -> None:
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 3, 1))
    assert monitor.handler({}, None)["records"] == 3
    assert monitor.handler({}, None)["records"] == 0
    put(capture_bucket, 5, lines([[0.01, 0.99]] * 2, 5))
    second = monitor.handler({}, None)
    assert second["records"] == 2 and second["last_key"].endswith("05-00-000-x.jsonl")
    assert "ConfidenceDrift" not in second["metrics"]  # too few records to judge


def test_unsettled_objects_wait_for_the_next_run(
    capture_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SETTLE_SECONDS", "3600")
    put(capture_bucket, 1, lines([[0.99, 0.01]], 1))
    assert monitor.handler({}, None)["objects"] == 0


def test_missing_or_malformed_configuration_is_a_named_error(
    capture_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASELINE_KEY", "nowhere.json")
    with pytest.raises(ConfigurationError, match="no baseline"):
        monitor.handler({}, None)
    boto3.client("s3").put_object(Bucket=capture_bucket, Key="bad.json", Body=b"[1, 2]")
    monkeypatch.setenv("BASELINE_KEY", "bad.json")
    with pytest.raises(ConfigurationError, match="not a baseline"):
        monitor.handler({}, None)
    monkeypatch.delenv("CAPTURE_PREFIX")
    with pytest.raises(ConfigurationError, match="CAPTURE_PREFIX"):
        monitor.handler({}, None)


def test_ks_distance_matches_the_definition() -> None:
    assert monitor.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert monitor.ks_distance([1, 2], [3, 4]) == 1.0
    assert monitor.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
