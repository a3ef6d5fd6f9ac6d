"""The canary's alarms on the answers (training_job/serving/canary_alarms.py): which are made from
the baselines, and that the local AWS fires them on a variant's answers as its endpoint
counts them (contract.variant_metrics.answer_values, the function the classify Lambda's
embedded metric format lines use on AWS), through the publisher and the alarm evaluator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from contract import baseline, variant_metrics
from local_aws import alarms, sagemaker_endpoints, variant_metrics_publisher
from local_aws.endpoint import metrics
from tests.contract.baseline_documents import document
from training_job.serving.canary_alarms import Margins, Reference, answer_alarms

ACCOUNT, REGION = "123456789012", "us-east-1"
LABELS = ("bicycle", "motorcycle")
MARGINS = Margins(doubtful=0.15, confidence=0.1, class_share=0.25)
# What production answered on its validation images: a balanced mix, some doubt.
BALANCED = Reference(
    "the serving version's baseline", 0.3, 0.85, {"bicycle": 0.5, "motorcycle": 0.5}
)


def _names(made: list[dict[str, Any]]) -> dict[str, tuple[str, str, float]]:
    return {
        alarm["AlarmName"].removeprefix("e-v2-"): (
            alarm["MetricName"],
            alarm["ComparisonOperator"],
            alarm["Threshold"],
        )
        for alarm in made
    }


def test_a_reference_reads_the_baselines_doubtful_share_confidence_and_class_mix() -> None:
    profile = baseline.parse(document(), "test")  # threshold 0.9; confidences .9 .6 .8
    reference = Reference.of(profile, "its baseline")
    assert reference.doubtful_share == pytest.approx(2 / 3)
    assert reference.confidence == pytest.approx(2.3 / 3)
    assert reference.class_share == pytest.approx({"bicycle": 2 / 3, "motorcycle": 1 / 3})


def test_the_answers_are_watched_both_ways_where_the_band_leaves_room() -> None:
    made = _names(answer_alarms("e-v2", "v2", BALANCED, None, MARGINS))
    assert made == {
        "doubtful-share": ("DoubtfulShare", "GreaterThanThreshold", pytest.approx(0.45)),
        "doubtful-share-low": ("DoubtfulShare", "LessThanThreshold", pytest.approx(0.15)),
        "confidence-low": ("Confidence", "LessThanThreshold", pytest.approx(0.75)),
        "confidence-high": ("Confidence", "GreaterThanThreshold", pytest.approx(0.95)),
        "class-bicycle-share": ("ClassShareBicycle", "GreaterThanThreshold", 0.75),
        "class-motorcycle-share": ("ClassShareMotorcycle", "GreaterThanThreshold", 0.75),
    }
    # With the errors and latency alarms: within AutoRollbackConfiguration's 10 alarms.
    assert len(made) + 2 <= sagemaker_endpoints.MAX_ALARMS


def test_uncrossable_limits_make_no_alarm_and_doubt_rises_against_the_lower_baseline() -> None:
    sure = Reference(
        "the serving version's baseline", 0.0, 0.99, {"bicycle": 0.98, "motorcycle": 0.02}
    )
    own = Reference("v2's baseline", 0.4, 0.7, {"bicycle": 0.5, "motorcycle": 0.5})
    made = _names(answer_alarms("e-v2", "v2", sure, own, MARGINS))
    assert made == {
        "doubtful-share": ("DoubtfulShare", "GreaterThanThreshold", pytest.approx(0.15)),
        "confidence-low": ("Confidence", "LessThanThreshold", pytest.approx(0.89)),
        "class-motorcycle-share": ("ClassShareMotorcycle", "GreaterThanThreshold", 0.27),
    }
    assert answer_alarms("e-v2", "v2", None, None, MARGINS) == []
    # Without the serving version's baseline, the new version's own is the reference.
    assert "class-bicycle-share" in _names(answer_alarms("e-v2", "v2", None, own, MARGINS))


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def _answers_published(answers: list[list[float]], threshold: float = 0.8) -> None:
    """The local endpoint's counting and the local AWS's publishing of these answers."""
    slots = metrics.allocate_slots(1)
    worker = metrics.WorkerMetrics(slots[0])
    for probabilities in answers:
        worker.count_variant(0, "invocations")
        worker.count_answer(0, variant_metrics.answer_values(probabilities, LABELS, threshold))
    state = {"endpoint_name": "e", "variants": {"v2": metrics.variant_counters(slots, 0)}}
    variant_metrics_publisher.publish(ACCOUNT, REGION, state, {})


def _firing(cloudwatch: Any) -> list[str]:
    names = []
    for alarm in answer_alarms("e-v2", "v2", BALANCED, None, MARGINS):
        cloudwatch.put_metric_alarm(
            **alarm,
            Dimensions=variant_metrics.dimensions("e", "v2"),
            Period=60,
            EvaluationPeriods=1,
            TreatMissingData="notBreaching",
        )
        names.append(alarm["AlarmName"])
    return [name.removeprefix("e-v2-") for name in alarms.in_alarm(ACCOUNT, REGION, names)]


def test_a_version_that_answers_like_production_fires_no_answer_alarm(cloudwatch: Any) -> None:
    # Half of each class, 30% doubtful (below 0.8), mean confidence 0.85.
    answers = [[0.95, 0.05]] * 7 + [[0.7, 0.3]] * 3 + [[0.05, 0.95]] * 7 + [[0.3, 0.7]] * 3
    _answers_published(answers)
    assert _firing(cloudwatch) == []


def test_a_constant_sure_answer_fires_the_class_mix_confidence_and_falling_doubt(
    cloudwatch: Any,
) -> None:
    """The issue's version: [1.0, 0.0] to every photo. Its doubtful share falls to 0, so
    a rising-doubt alarm alone never sees it."""
    _answers_published([[1.0, 0.0]] * 20)
    assert sorted(_firing(cloudwatch)) == [
        "class-bicycle-share",
        "confidence-high",
        "doubtful-share-low",
    ]


def test_an_unsure_constant_answer_fires_the_rising_doubt_and_falling_confidence(
    cloudwatch: Any,
) -> None:
    _answers_published([[0.5, 0.5]] * 20)
    assert sorted(_firing(cloudwatch)) == [
        "class-bicycle-share",
        "confidence-low",
        "doubtful-share",
    ]
