"""The rollout's alarms in CloudWatch: made for the new variant before the canary (errors,
latency, and the answers against the baselines: canary_alarms.py), read when SageMaker
rolls the canary back, and deleted when the rollout ends, however it ends."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import boto3
from botocore.exceptions import ClientError

from contract import baseline as baseline_contract
from contract import variant_metrics
from contract.capture import MAX_BASELINE_BYTES, MONITOR_BASELINE_KEY
from training_job.models import archive as model_archive
from training_job.serving import canary_alarms, deployment

# A rollout's progress line: (stage, text).
Stage = Callable[[str, str], None]


class Limits(NamedTuple):
    """What the alarms allow: their period, the p99 model latency, the answers' margins."""

    period_seconds: int
    max_latency_ms: float
    margins: canary_alarms.Margins


def create(
    endpoint: str,
    variant: str,
    limits: Limits,
    references: tuple[canary_alarms.Reference | None, canary_alarms.Reference | None],
    stage: Stage,
) -> list[str]:
    """The alarms that roll the canary back (docs/operations.md says what each means);
    `references` are the serving version's baseline and the new version's own."""
    cloudwatch = boto3.client("cloudwatch")
    dimensions = variant_metrics.dimensions(endpoint, variant)
    prefix = f"{endpoint}-{variant}"
    common = {
        "Dimensions": dimensions,
        "Period": limits.period_seconds,
        "EvaluationPeriods": 1,
        "TreatMissingData": "notBreaching",
    }
    alarms: list[dict[str, Any]] = [
        {
            "AlarmName": f"{prefix}-5xx-errors",
            "AlarmDescription": f"{variant} answered a request with a 5XX error",
            "Namespace": variant_metrics.SAGEMAKER_NAMESPACE,
            "MetricName": variant_metrics.INVOCATION_5XX_ERRORS,
            "Statistic": "Sum",
            "Threshold": 0.0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
        {
            "AlarmName": f"{prefix}-model-latency-p99",
            "AlarmDescription": f"{variant}'s p99 model latency is over "
            f"{limits.max_latency_ms:g} ms",
            "Namespace": variant_metrics.SAGEMAKER_NAMESPACE,
            "MetricName": variant_metrics.MODEL_LATENCY,
            "ExtendedStatistic": "p99",
            "Threshold": limits.max_latency_ms * 1000,  # ModelLatency is in µs
            "ComparisonOperator": "GreaterThanThreshold",
        },
    ]
    serving, new = references
    alarms += canary_alarms.answer_alarms(prefix, variant, serving, new, limits.margins)
    for alarm in alarms:
        cloudwatch.put_metric_alarm(**common, **alarm)
        stage("alarms", f"{alarm['AlarmName']}: {alarm['AlarmDescription']}")
    return [str(alarm["AlarmName"]) for alarm in alarms]


def firing(names: list[str]) -> list[str]:
    """Those of `names` in ALARM now."""
    described = boto3.client("cloudwatch").describe_alarms(AlarmNames=names)
    return [
        alarm["AlarmName"] for alarm in described["MetricAlarms"] if alarm["StateValue"] == "ALARM"
    ]


def delete(endpoint: str, variant: str, stage: Stage) -> None:
    """The rollout's alarms end with it (they judge one deployment; left behind, each
    costs its monthly price and shows INSUFFICIENT_DATA forever)."""
    cloudwatch = boto3.client("cloudwatch")
    prefix = f"{endpoint}-{variant}-"
    names = [
        alarm["AlarmName"]
        for page in cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]
        )
        for alarm in page["MetricAlarms"]
    ]
    for start in range(0, len(names), 100):  # DeleteAlarms takes up to 100 names
        cloudwatch.delete_alarms(AlarmNames=names[start : start + 100])
    if names:
        stage("alarms", f"deleted {', '.join(names)}")


def references(
    endpoint: str, variant: str, model_data: str, bucket: str | None
) -> tuple[canary_alarms.Reference | None, canary_alarms.Reference | None]:
    """What the new version's answers are judged against
    (training_job/serving/canary_alarms.py): the serving version's baseline (the
    monitor's, in `bucket`) and the new version's own (in its model.tar.gz); None for
    one that cannot be read."""
    model_bucket, key = deployment.split_s3_uri(model_data)
    new = reference(model_bucket, key, f"{variant}'s baseline")
    serving = None
    if bucket:
        serving_key = MONITOR_BASELINE_KEY.format(endpoint=endpoint)
        serving = reference(bucket, serving_key, "the serving version's baseline")
    if serving is None and new is not None:
        print(
            "warning: no serving version's baseline: the answers are judged against the "
            "new version's own profile, which shares its faults",
            file=sys.stderr,
        )
    if serving is None and new is None:
        print("warning: no baseline at all: no alarm on the answers", file=sys.stderr)
    return serving, new


def reference(bucket: str, key: str, what: str) -> canary_alarms.Reference | None:
    """The baseline at s3://bucket/key (a baseline.json, or inside a model.tar.gz)."""
    s3 = boto3.client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with body:
            document = (
                body.read(MAX_BASELINE_BYTES + 1)
                if key.endswith(".json")
                else model_archive.read_member(body, deployment.BASELINE_FILE, MAX_BASELINE_BYTES)
            )
        if document is None:
            raise ValueError(f"s3://{bucket}/{key} holds no baseline")
        profile = baseline_contract.loads(document, f"s3://{bucket}/{key}")
    except (ClientError, ValueError, model_archive.ModelArchiveError) as error:
        print(f"note: no {what}: {error}", file=sys.stderr)
        return None
    return canary_alarms.Reference.of(profile, what)
