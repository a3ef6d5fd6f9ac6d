"""The local AWS's alarm evaluator (local_aws/alarms.py): the alarm shapes `training_job
rollout` creates, evaluated from the data points in moto's CloudWatch, in process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local_aws import alarms

ACCOUNT, REGION = "123456789012", "us-east-1"
DIMENSIONS = [{"Name": "EndpointName", "Value": "e"}, {"Name": "VariantName", "Value": "v2"}]


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def _alarm(client: Any, name: str, **shape: Any) -> None:
    client.put_metric_alarm(
        AlarmName=name,
        Namespace=shape.pop("Namespace", "AWS/SageMaker"),
        Dimensions=DIMENSIONS,
        Period=shape.pop("Period", 60),
        EvaluationPeriods=shape.pop("EvaluationPeriods", 1),
        TreatMissingData=shape.pop("TreatMissingData", "notBreaching"),
        **shape,
    )


def _put(client: Any, metric: str, *, at: datetime | None = None, **value: Any) -> None:
    client.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": DIMENSIONS,
                "Timestamp": at or datetime.now(UTC),
                **value,
            }
        ],
    )


def _state(client: Any, name: str) -> str:
    return str(client.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"])


def test_a_sum_over_zero_goes_to_alarm_and_describe_alarms_shows_it(cloudwatch: Any) -> None:
    _alarm(
        cloudwatch, "errors", MetricName="Invocation5XXErrors", Statistic="Sum",
        Threshold=0.0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    _put(cloudwatch, "Invocation5XXErrors", Value=0.0)
    assert alarms.in_alarm(ACCOUNT, REGION, ["errors"]) == []
    assert _state(cloudwatch, "errors") == "OK"
    _put(cloudwatch, "Invocation5XXErrors", Value=2.0)
    assert alarms.in_alarm(ACCOUNT, REGION, ["errors", "no-such-alarm"]) == ["errors"]
    assert _state(cloudwatch, "errors") == "ALARM"


def test_a_breach_older_than_the_evaluation_periods_is_forgotten(cloudwatch: Any) -> None:
    _alarm(
        cloudwatch, "old", MetricName="Invocation5XXErrors", Statistic="Sum", Period=10,
        Threshold=0.0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    _put(cloudwatch, "Invocation5XXErrors", Value=5.0, at=datetime.now(UTC) - timedelta(minutes=2))
    assert alarms.in_alarm(ACCOUNT, REGION, ["old"]) == []


def test_a_p99_reads_raw_values_and_an_average_reads_statistic_sets(cloudwatch: Any) -> None:
    _alarm(
        cloudwatch, "latency", MetricName="ModelLatency", ExtendedStatistic="p99",
        Threshold=500_000.0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    _put(cloudwatch, "ModelLatency", Values=[10_000.0, 2_000_000.0], Counts=[99.0, 1.0])
    assert alarms.in_alarm(ACCOUNT, REGION, ["latency"]) == []  # the 99th of 100 is 10 ms
    _put(cloudwatch, "ModelLatency", Values=[2_000_000.0], Counts=[5.0])
    assert alarms.in_alarm(ACCOUNT, REGION, ["latency"]) == ["latency"]
    _alarm(
        cloudwatch, "doubtful", MetricName="DoubtfulShare", Statistic="Average",
        Threshold=0.2, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    stats = {"SampleCount": 10.0, "Sum": 1.0, "Minimum": 0.0, "Maximum": 1.0}
    _put(cloudwatch, "DoubtfulShare", StatisticValues=stats)
    assert alarms.in_alarm(ACCOUNT, REGION, ["doubtful"]) == []  # 0.1
    _put(cloudwatch, "DoubtfulShare", StatisticValues={**stats, "Sum": 10.0})
    assert alarms.in_alarm(ACCOUNT, REGION, ["doubtful"]) == ["doubtful"]  # 11 / 20


def test_missing_data_follows_treat_missing_data(cloudwatch: Any) -> None:
    shape = {
        "MetricName": "Invocation5XXErrors",
        "Statistic": "Sum",
        "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    _alarm(cloudwatch, "quiet", TreatMissingData="notBreaching", **shape)
    _alarm(cloudwatch, "strict", TreatMissingData="breaching", **shape)
    assert alarms.in_alarm(ACCOUNT, REGION, ["quiet", "strict"]) == ["strict"]


def test_two_of_three_datapoints_to_alarm(cloudwatch: Any) -> None:
    _alarm(
        cloudwatch, "two-of-three", MetricName="Invocations", Statistic="Sum", Period=10,
        EvaluationPeriods=3, DatapointsToAlarm=2, Threshold=5.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )  # fmt: skip
    now = datetime.now(UTC)
    _put(cloudwatch, "Invocations", Value=9.0, at=now - timedelta(seconds=1))
    assert alarms.in_alarm(ACCOUNT, REGION, ["two-of-three"]) == []
    _put(cloudwatch, "Invocations", Value=9.0, at=now - timedelta(seconds=15))
    assert alarms.in_alarm(ACCOUNT, REGION, ["two-of-three"]) == ["two-of-three"]


def test_an_alarm_an_operator_set_to_alarm_counts_as_firing(cloudwatch: Any) -> None:
    _alarm(
        cloudwatch, "manual", MetricName="Invocation5XXErrors", Statistic="Sum",
        Threshold=0.0, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    cloudwatch.set_alarm_state(AlarmName="manual", StateValue="ALARM", StateReason="stop it")
    assert alarms.in_alarm(ACCOUNT, REGION, ["manual"]) == ["manual"]
