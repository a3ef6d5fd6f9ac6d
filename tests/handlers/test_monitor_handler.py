"""The scheduled monitor against the local AWS: reads new captures once, publishes metrics."""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import numpy as np
import pytest

from contract.drift_statistics import ks_critical_distance
from handlers import monitor, threshold_filter
from handlers.errors import ConfigurationError
from tests.baselines import known_baseline
from tests.serverless_config import declared_service
from training_job.monitor.baseline import Baseline, BaselineError
from training_job.monitor.detectors import (
    ClassMixDetector,
    ConfidenceDetector,
    LowConfidenceDetector,
    Window,
)
from training_job.serving import capture

PREFIX = "data_capture/ep/"


@pytest.fixture(scope="module")
def baseline_document() -> bytes:
    """baseline.json as training writes it (tests/baselines.py), for 40 validation images,
    half bicycles and half motorcycles, all confident."""
    document = known_baseline()
    written = json.loads(document)
    assert written["class_counts"] == {"bicycle": 20, "motorcycle": 20}
    assert min(written["confidences"]) > 0.95
    return document


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
    local_aws: dict[str, str],
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
    baseline_document: bytes,
) -> Iterator[str]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(
        Bucket=unique_name,
        Key="models/job/output/baseline.json",
        Body=baseline_document,
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
    monkeypatch.delenv("THRESHOLD", raising=False)  # contract.threshold's default
    yield unique_name


def put(bucket: str, minute: int, body: bytes, variant: str = "AllTraffic") -> None:
    key = f"{PREFIX}{variant}/2026/11/24/09/{minute:02d}-00-000-x.jsonl"
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
    assert second["records"] == 2
    assert second["cursors"]["AllTraffic"].endswith("05-00-000-x.jsonl")
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
    boto3.client("s3").put_object(Bucket=capture_bucket, Key="bad.json", Body=b"[1, 2]")
    monkeypatch.setenv("BASELINE_KEY", "bad.json")
    with pytest.raises(ConfigurationError, match="not a baseline"):
        monitor.handler({}, None)
    monkeypatch.delenv("CAPTURE_PREFIX")
    with pytest.raises(ConfigurationError, match="CAPTURE_PREFIX"):
        monitor.handler({}, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format_version": 99}, "format_version 99 is not one of [1, 2, 3]"),
        ({"class_counts": {"bicycle": 1}}, "class_counts sum to 1, not 40"),
        ({"input_statistics": {"brightness": [0.5]}}, "every input statistic needs 40 values"),
    ],
)
def test_both_monitors_refuse_a_damaged_baseline_for_the_same_reason(
    capture_bucket: str, baseline_document: bytes, change: dict[str, Any], reason: str
) -> None:
    """The Lambda and `training_job monitor` read baseline.json with one reader
    (contract.baseline): before, the Lambda read a baseline whose statistics the other
    refused, and each checked other fields."""
    damaged = json.dumps({**json.loads(baseline_document), **change}).encode()
    boto3.client("s3").put_object(
        Bucket=capture_bucket, Key="models/job/output/baseline.json", Body=damaged
    )
    with pytest.raises(ConfigurationError) as lambda_refusal:
        monitor.handler({}, None)
    embeddings = io.BytesIO()
    np.save(embeddings, np.zeros((40, 4), dtype=np.float32))
    with pytest.raises(BaselineError) as monitor_refusal:
        Baseline.from_bytes(damaged, embeddings.getvalue(), "monitor")
    for refusal in (lambda_refusal, monitor_refusal):
        assert "not a baseline document: " + reason in str(refusal.value)


def test_the_lambda_and_the_monitor_command_measure_a_window_alike(
    capture_bucket: str, baseline_document: bytes
) -> None:
    """One definition of each statistic (contract/drift_statistics.py): on the same
    captured answers and the same baseline.json, the Lambda publishes the numbers the
    monitor command's detectors test, to the last bit: LowConfidenceRate is the
    low-confidence test's statistic, ConfidenceDrift the confidence test's KS distance over
    its critical value, each ClassShare the class-mix test's count over the window."""
    rng = np.random.default_rng(3)
    # Rounded confidences tie, as real ones do; [0.5, 0.5] ties the two classes.
    top = rng.uniform(0.51, 1.0, 150).round(2)
    motorcycle = rng.random(150) < 0.7
    outputs = [[1 - t, t] if m else [t, 1 - t] for t, m in zip(top, motorcycle, strict=True)]
    outputs.append([0.5, 0.5])
    put(capture_bucket, 1, lines(outputs, 1))
    metrics = monitor.handler({}, None)["metrics"]

    embeddings = io.BytesIO()
    np.save(embeddings, np.zeros((40, 4), dtype=np.float32))
    baseline = Baseline.from_bytes(baseline_document, embeddings.getvalue(), "the same")
    window = Window({}, np.zeros(0), Counter(), np.asarray(outputs, dtype=np.float64))
    class_mix = ClassMixDetector().fit(baseline)
    findings = {
        f.test: f
        for detector in (class_mix, ConfidenceDetector(), LowConfidenceDetector())
        for f in detector.fit(baseline).test(window)
    }
    assert metrics["LowConfidenceRate"] == findings["low_confidence_rate"].statistic
    critical = ks_critical_distance(baseline.count, len(outputs))
    assert metrics["ConfidenceDrift"] == findings["confidence"].statistic / critical
    counts = class_mix.counts(window)
    assert counts["bicycle"] == 150 - int(motorcycle.sum()) + 1  # the tie: the first class
    cloudwatch = boto3.client("cloudwatch")
    for name, count in counts.items():
        datapoints = cloudwatch.get_metric_statistics(
            Namespace=f"Test/{capture_bucket}",
            MetricName="ClassShare",
            Dimensions=[
                {"Name": "EndpointName", "Value": capture_bucket},
                {"Name": "Class", "Value": name},
            ],
            StartTime=datetime.now(UTC) - timedelta(hours=1),
            EndTime=datetime.now(UTC) + timedelta(hours=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        assert datapoints[0]["Maximum"] == count / len(outputs)


def monitor_role_list_prefixes() -> list[str]:
    """The key prefixes MonitorRole may list (its s3:ListBucket statement's s3:prefix)."""
    role = declared_service()["resources"]["Resources"]["MonitorRole"]
    (statement,) = [
        s
        for policy in role["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
        if s["Action"] == "s3:ListBucket"
    ]
    return list(statement["Condition"]["StringLike"]["s3:prefix"])


@pytest.fixture
def s3_calls() -> Iterator[list[tuple[str, dict[str, Any], int]]]:
    """Every S3 call the handler makes: (operation, parameters, HTTP status)."""
    calls: list[tuple[str, dict[str, Any], int]] = []

    def record(http_response: Any, model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, dict(params), http_response.status_code))

    def remember(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["params"] = params

    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events
    events.register("provide-client-params.s3.*", remember)
    events.register(
        "after-call.s3.*",
        lambda http_response, model, context, **kw: record(
            http_response, model, context.get("params", {})
        ),
    )
    yield calls
    boto3.setup_default_session()


def test_first_run_works_under_its_role_and_waits_for_the_baseline(
    capture_bucket: str,
    baseline_document: bytes,
    monkeypatch: pytest.MonkeyPatch,
    s3_calls: list[tuple[str, dict[str, Any], int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Under MonitorRole, ListBucket is allowed only with an s3:prefix. S3 answers a
    # GetObject of a missing key with 404 only to callers allowed ListBucket on the whole
    # bucket (GetObject's documented permissions), so under this role every GetObject of
    # a missing object is AccessDenied: the handler must never make one.
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 3, 1))
    key = f"monitoring/{capture_bucket}/baseline.json"
    monkeypatch.setenv("BASELINE_KEY", key)

    waiting = monitor.handler({}, None)
    assert waiting["waiting_for"] == f"s3://{capture_bucket}/{key}"
    assert "waiting for a baseline" in capsys.readouterr().out
    assert published(capture_bucket) == set()  # no metrics, so no alarm

    boto3.client("s3").put_object(Bucket=capture_bucket, Key=key, Body=baseline_document)
    first = monitor.handler({}, None)  # the first run with a baseline: no state object yet
    assert first["records"] == 3

    allowed = monitor_role_list_prefixes()
    gets = [(params["Key"], status) for name, params, status in s3_calls if name == "GetObject"]
    assert gets and all(status == 200 for _, status in gets), gets
    for name, params, _ in s3_calls:
        if name == "ListObjectsV2":
            assert any(fnmatch.fnmatchcase(params["Prefix"], p) for p in allowed), params


def test_the_baseline_key_serverless_names_by_default_is_under_the_listable_prefixes() -> None:
    default = declared_service()["custom"]["deployedBaselineKey"]["Fn::Sub"][0]
    assert default == "monitoring/${Name}/baseline.json"
    allowed = monitor_role_list_prefixes()
    assert any(fnmatch.fnmatchcase(default.replace("${Name}", "ep"), p) for p in allowed)
    assert any(fnmatch.fnmatchcase("models/job/output/baseline.json", p) for p in allowed)


def test_a_deeply_nested_line_is_counted_and_the_position_advances(capture_bucket: str) -> None:
    nested = b"[" * 200_000 + b"\n"  # a RecursionError in the JSON parser
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 2, 1) + nested + lines([[0.2, 0.8]], 1))
    first = monitor.handler({}, None)
    assert (first["records"], first["damaged"]) == (3, 1)
    assert first["cursors"]["AllTraffic"].endswith("01-00-000-x.jsonl")
    assert monitor.handler({}, None)["objects"] == 0  # read once, never again


def gzip_bomb(unpacked_bytes: int) -> bytes:
    """About 1 KB of gzip per MB of zeros, built without holding the zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(unpacked_bytes // len(zeros))]
    return b"".join([*parts, compressor.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(1024**3)  # 1 GiB unpacked, about 1 MB stored


def test_a_gzip_bomb_is_counted_and_skipped_in_bounded_memory(
    capture_bucket: str, bomb: bytes
) -> None:
    assert len(bomb) < 1_100_000
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 2, 1))
    put(capture_bucket, 2, bomb)
    put(capture_bucket, 3, gzip.compress(lines([[0.01, 0.99]], 3)))
    tracemalloc.start()
    try:
        summary = monitor.handler({}, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (summary["objects"], summary["records"], summary["damaged"]) == (3, 3, 1)
    assert summary["cursors"]["AllTraffic"].endswith("03-00-000-x.jsonl")
    assert peak < 128 * 1024 * 1024  # the Lambda has 256 MB; the bomb unpacks to 1 GiB


class RunningOutOfTime:
    """A Lambda context whose remaining time drops below the monitor's reserve after
    `objects_in_time` checks."""

    function_name = "monitor"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000002"

    def __init__(self, objects_in_time: int) -> None:
        self.checks = 0
        self.objects_in_time = objects_in_time

    def get_remaining_time_in_millis(self) -> int:
        self.checks += 1
        spare = monitor.RESERVED_MILLIS + (1000 if self.checks <= self.objects_in_time else -1)
        return spare


def test_a_run_short_of_time_stops_between_objects_and_the_next_goes_on(
    capture_bucket: str,
) -> None:
    put(capture_bucket, 1, lines([[0.99, 0.01]], 1))
    put(capture_bucket, 2, lines([[0.99, 0.01]] * 2, 2))
    first = monitor.handler({}, RunningOutOfTime(objects_in_time=1))
    assert (first["objects"], first["records"]) == (1, 1)
    assert first["cursors"]["AllTraffic"].endswith("01-00-000-x.jsonl")
    second = monitor.handler({}, None)
    assert (second["objects"], second["records"]) == (1, 2)


def filter_event(probabilities: list[float]) -> dict[str, object]:
    return {
        "image_data": "aGk=",
        "s3_bucket": "scones-unlimited-test",
        "s3_key": "test/bike_s_000001.png",
        "inferences": probabilities,
    }


@pytest.mark.parametrize(("setting", "low_rate"), [("0.5", 0.0), ("0.7", 0.5), ("", 0.5)])
def test_the_low_confidence_rate_counts_below_the_filters_own_threshold(
    capture_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    low_rate: float,
) -> None:
    # Before, the monitor counted below the baseline's recorded 0.93 whatever THRESHOLD
    # the filter ran with: `--param threshold=0.5` left LowConfidenceRate at 0.5.
    monkeypatch.setenv("THRESHOLD", setting)
    outputs = [[0.99, 0.01]] * 2 + [[0.4, 0.6]] * 2
    put(capture_bucket, 1, lines(outputs, 1))
    summary = monitor.handler({}, None)
    assert summary["metrics"]["LowConfidenceRate"] == pytest.approx(low_rate)
    # The same setting, read the same way: what the monitor counts as low is what the
    # filter stops.
    stopped = 0
    for probabilities in outputs:
        try:
            threshold_filter.handler(filter_event(probabilities))
        except threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET:
            stopped += 1
    assert stopped / len(outputs) == pytest.approx(low_rate)
    assert summary["threshold"] == (float(setting) if setting else 0.93)
    assert summary["baseline_threshold"] == 0.93
    differs = "profiled at another confidence threshold" in capsys.readouterr().out
    assert differs == (setting not in ("", "0.93"))


def test_a_baseline_profiled_at_another_threshold_is_reported(
    capture_bucket: str,
    baseline_document: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profiled_at = {**json.loads(baseline_document), "confidence_threshold": 0.8}
    boto3.client("s3").put_object(
        Bucket=capture_bucket,
        Key="models/job/output/baseline.json",
        Body=json.dumps(profiled_at).encode(),
    )
    put(capture_bucket, 1, lines([[0.99, 0.01]], 1))
    summary = monitor.handler({}, None)
    assert (summary["threshold"], summary["baseline_threshold"]) == (0.93, 0.8)
    warning = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if "profiled at another confidence threshold" in line
    ]
    assert len(warning) == 1
    assert (warning[0]["threshold"], warning[0]["baseline_threshold"]) == (0.93, 0.8)


@pytest.mark.parametrize("setting", ["high", "0", "1.5", "nan"])
def test_a_malformed_threshold_stops_the_monitor_as_it_stops_the_filter(
    capture_bucket: str, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("THRESHOLD", setting)
    with pytest.raises(ConfigurationError, match="THRESHOLD"):
        monitor.handler({}, None)
    with pytest.raises(ConfigurationError, match="THRESHOLD"):
        threshold_filter.handler(filter_event([0.99, 0.01]))


# --- variants: rollouts, rollbacks and shadows ------------------------------------------


def test_after_a_rollout_from_v9_to_v10_the_next_run_reads_v10s_captures(
    capture_bucket: str,
) -> None:
    """S3 lists keys in UTF-8 binary order and StartAfter starts the listing after the
    given key (ListObjectsV2, API reference: "Amazon S3 starts listing after this
    specified key"). `.../v10/...` sorts before `.../v9/...`: with one cursor across
    variants, every capture of v10 was skipped. Each variant keeps its own cursor."""
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 3, 1), variant="v9")
    assert monitor.handler({}, None)["records"] == 3
    put(capture_bucket, 2, lines([[0.01, 0.99]] * 4, 2), variant="v10")  # the rollout
    after = monitor.handler({}, None)
    assert after["records"] == 4
    assert after["variants"]["v10"] == {
        "role": "production",
        "objects": 1,
        "records": 4,
        "damaged": 0,
    }
    assert set(after["cursors"]) == {"v9", "v10"}
    assert monitor.handler({}, None)["records"] == 0  # each object read once


def test_after_a_rollback_from_v2_to_v1_the_next_run_reads_v1s_new_captures(
    capture_bucket: str,
) -> None:
    """v1 served, v2 was rolled out, then rolled back to v1: v1's new captures sort before
    v2's cursor (ListObjectsV2 lists in key order), so one cursor never read them."""
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 2, 1), variant="v1")
    put(capture_bucket, 2, lines([[0.99, 0.01]] * 3, 2), variant="v2")
    assert monitor.handler({}, None)["records"] == 5
    put(capture_bucket, 3, lines([[0.01, 0.99]] * 6, 3), variant="v1")  # the rollback
    after = monitor.handler({}, None)
    assert after["records"] == 6
    assert after["variants"]["v1"]["records"] == 6
    assert after["cursors"]["v1"].endswith("v1/2026/11/24/09/03-00-000-x.jsonl")


def test_a_one_cursor_state_is_read_as_its_variants_cursor(capture_bucket: str) -> None:
    """The state an earlier monitor wrote ({"last_key": KEY}) stays valid: KEY's variant
    goes on after KEY, and a variant sorting before it (v10's, never read) is read."""
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 2, 1), variant="v9")
    put(capture_bucket, 2, lines([[0.99, 0.01]] * 3, 2), variant="v9")
    put(capture_bucket, 3, lines([[0.01, 0.99]] * 4, 3), variant="v10")
    old_state = {"last_key": f"{PREFIX}v9/2026/11/24/09/01-00-000-x.jsonl"}
    boto3.client("s3").put_object(
        Bucket=capture_bucket,
        Key=f"monitoring/{capture_bucket}.json",
        Body=json.dumps(old_state).encode(),
    )
    summary = monitor.handler({}, None)
    assert {v: s["records"] for v, s in summary["variants"].items()} == {"v10": 4, "v9": 3}


def serve_with_shadow(endpoint: str, production: str, shadow: str) -> None:
    """An endpoint in the local AWS whose configuration names a production and a shadow
    variant (its models' artifacts are never loaded: nothing invokes it here)."""
    sm = boto3.client("sagemaker")
    variants = []
    for variant in (production, shadow):
        model = f"{endpoint}-{variant}"
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn="arn:aws:iam::123456789012:role/test",
            PrimaryContainer={"Image": "local", "ModelDataUrl": f"s3://b/{variant}/model.tar.gz"},
        )
        variants.append(
            {
                "VariantName": variant,
                "ModelName": model,
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        )
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[{**variants[0], "InitialVariantWeight": 1.0}],
        ShadowProductionVariants=[variants[1]],
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)


def test_shadow_captures_are_kept_apart_from_productions_statistics(
    capture_bucket: str,
) -> None:
    """DescribeEndpoint's ShadowProductionVariants lists the variants that get copies of
    production's requests, whose answers nobody sees (SageMaker API reference,
    DescribeEndpoint; CreateEndpointConfig allows one production and one shadow variant
    then). The endpoint's metrics, which the alarms watch, count production's answers
    only; the shadow's are published under their own VariantName."""
    serve_with_shadow(capture_bucket, "v1", "v2")
    put(capture_bucket, 1, lines([[0.99, 0.01]] * 10 + [[0.01, 0.99]] * 10, 1), variant="v1")
    put(capture_bucket, 1, lines([[0.6, 0.4]] * 20, 1), variant="v2")  # a doubtful shadow
    summary = monitor.handler({}, None)
    assert (summary["records"], summary["metrics"]["LowConfidenceRate"]) == (20, 0.0)
    assert summary["variants"]["v2"]["role"] == "shadow"
    assert summary["variants"]["v2"]["records"] == 20
    cloudwatch = boto3.client("cloudwatch")
    shadow_low = cloudwatch.get_metric_statistics(
        Namespace=f"Test/{capture_bucket}",
        MetricName="LowConfidenceRate",
        Dimensions=[
            {"Name": "EndpointName", "Value": capture_bucket},
            {"Name": "VariantName", "Value": "v2"},
        ],
        StartTime=datetime(2020, 1, 1, tzinfo=UTC),
        EndTime=datetime(2100, 1, 1, tzinfo=UTC),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert [point["Maximum"] for point in shadow_low] == [1.0]
