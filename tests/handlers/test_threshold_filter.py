"""The threshold filter: confident inferences pass, doubtful ones raise the error the
state machine catches (its class name is the Lambda errorType)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.decisions import DEFAULT_AUDIT_RATE
from handlers import threshold_filter
from handlers.errors import ConfigurationError, InvalidEvent
from tests.handlers.conftest import LambdaContext

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def default_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THRESHOLD", raising=False)
    monkeypatch.delenv("AUDIT_RATE", raising=False)


def event(*inferences: float) -> dict[str, object]:
    return {
        "image_data": "aGk=",
        "s3_bucket": "scones-unlimited-test",
        "s3_key": "test/bike_s_000001.png",
        "inferences": list(inferences),
    }


def test_a_confident_inference_passes_unchanged(
    lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    assert threshold_filter.handler(event(0.973, 0.027), lambda_context) == {
        "statusCode": 200,
        "body": event(0.973, 0.027),
    }
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["label"] == "bicycle"
    assert record["confidence"] == 0.973
    assert record["request_id"] == lambda_context.aws_request_id


def test_either_class_can_be_the_confident_one() -> None:
    assert threshold_filter.handler(event(0.01, 0.99))["statusCode"] == 200


def test_exactly_the_threshold_passes() -> None:
    assert threshold_filter.handler(event(0.93, 0.07))["statusCode"] == 200


def test_just_below_the_threshold_is_stopped_with_the_catchable_error_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET) as raised:
        threshold_filter.handler(event(0.9299999, 0.0700001))
    # Lambda's errorType is the class name: what the state machine's Catch matches.
    assert type(raised.value).__name__ == "THRESHOLD_CONFIDENCE_NOT_MET"
    assert "0.93" in str(raised.value)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["level"] == "WARNING"


def test_a_coin_toss_is_stopped() -> None:
    with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET):
        threshold_filter.handler(event(0.5, 0.5))


def test_classifys_return_value_is_accepted_as_the_event() -> None:
    chained = {"statusCode": 200, "body": event(0.95, 0.05)}
    assert threshold_filter.handler(chained)["body"] == event(0.95, 0.05)


@pytest.mark.parametrize(("threshold", "passes"), [("0.5", True), ("1", False), (" 0.96 ", False)])
def test_the_threshold_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, threshold: str, passes: bool
) -> None:
    monkeypatch.setenv("THRESHOLD", threshold)
    if passes:
        assert threshold_filter.handler(event(0.95, 0.05))["statusCode"] == 200
    else:
        with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET):
            threshold_filter.handler(event(0.95, 0.05))


def test_a_threshold_of_one_passes_certainty_and_nothing_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("THRESHOLD", "1")
    assert threshold_filter.configured_threshold() == 1.0
    assert threshold_filter.handler(event(1.0, 0.0))["statusCode"] == 200
    assert threshold_filter.handler(event(0.0, 1.0))["statusCode"] == 200
    with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET):
        threshold_filter.handler(event(0.999999, 0.000001))


@pytest.mark.parametrize("threshold", ["high", "0", "-0.5", "1.01", "nan", "inf", "0x1p-1", "93%"])
def test_a_malformed_threshold_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, threshold: str
) -> None:
    monkeypatch.setenv("THRESHOLD", threshold)
    with pytest.raises(ConfigurationError, match="THRESHOLD"):
        threshold_filter.handler(event(0.99, 0.01))


def test_an_event_without_inferences_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="no inferences"):
        threshold_filter.handler(event())


@pytest.mark.parametrize(
    "hostile",
    [None, "0.99", {"inferences": [2.0]}, {"inferences": ["0.99"]}, {"inferences": [True]}],
)
def test_hostile_events_are_invalid_events(hostile: object) -> None:
    with pytest.raises(InvalidEvent):
        threshold_filter.handler(hostile)


@pytest.mark.parametrize(
    ("inferences", "problem"),
    [
        ([0.99], "must hold 2 probabilities"),
        ([0.5, 0.3, 0.2], "must hold 2 probabilities"),
        ([0.01, 0.01, 0.98], "must hold 2 probabilities"),  # once passed as label "2"
        ([0.99, 0.99], "must sum to 1"),  # once passed as confident
        ([0.94, 0.0], "must sum to 1"),
        ([0.5, 0.499], "must sum to 1"),
    ],
)
def test_inferences_that_are_not_a_distribution_over_the_labels_are_refused(
    inferences: list[float], problem: str
) -> None:
    with pytest.raises(InvalidEvent, match=problem):
        threshold_filter.handler(event(*inferences))


@pytest.mark.parametrize(
    "inferences",
    [[float("nan"), 0.5], [float("inf"), 0.0], [True, False], ["0.99", "0.01"], [None, 1.0]],
    ids=["nan", "inf", "bool", "strings", "null"],
)
def test_inferences_that_are_not_numbers_in_0_1_are_refused(inferences: list[object]) -> None:
    with pytest.raises(InvalidEvent, match="between 0 and 1"):
        threshold_filter.handler({"inferences": inferences})


def test_float_rounding_of_a_softmax_still_passes() -> None:
    # float32 softmax outputs, as the endpoint's JSON carries them
    assert threshold_filter.handler(event(0.9700000286102295, 0.029999999329447746))


def test_the_filter_imports_neither_boto3_nor_botocore() -> None:
    code = (
        "import sys, handlers.threshold_filter; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "[]", result.stderr


# --- the decision and the audit sample --------------------------------------------------


def classified(key: str, *inferences: float) -> dict[str, object]:
    """What classify returns for the photo `key` (the fields it adds to the event)."""
    return {
        "statusCode": 200,
        "body": {
            **event(*inferences),
            "s3_key": key,
            "endpoint": "scones-image-classifier",
            "variant": "v7",
            "decided_at": "2026-11-29T12:00:00.000+00:00",
        },
    }


def test_a_classified_photo_that_passes_carries_its_decision() -> None:
    decision = threshold_filter.handler(classified("incoming/a.png", 0.02, 0.98))["decision"]
    assert decision == {
        "image": "s3://scones-unlimited-test/incoming/a.png",
        "label": "motorcycle",
        "confidence": 0.98,
        "model_version": "7",
        "endpoint": "scones-image-classifier",
        "variant": "v7",
        "decided_at": "2026-11-29T12:00:00.000+00:00",
        "familiarity": None,  # the model version said nothing of it
        "dynamodb": {
            "confidence": {"N": "0.98"},
            "inferences": {"L": [{"N": "0.02"}, {"N": "0.98"}]},
            "familiarity": {"NULL": True},
        },
        "audit": decision["audit"],
    }


def test_tiny_probabilities_are_written_as_plain_decimals_for_dynamodb() -> None:
    decision = threshold_filter.handler(classified("incoming/b.png", 1 - 1e-9, 1e-9))["decision"]
    assert decision["dynamodb"]["inferences"]["L"][1] == {"N": "0.000000001"}


def test_the_audit_sample_is_a_share_of_photos_and_the_same_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = [f"s3://scones-unlimited-test/incoming/{n}.png" for n in range(4000)]
    sampled = [image for image in images if threshold_filter.in_audit_sample(image, 0.05)]
    assert 0.04 < len(sampled) / len(images) < 0.06  # binomial sd ~0.0034
    assert sampled == [i for i in images if threshold_filter.in_audit_sample(i, 0.05)]
    # A larger rate keeps every photo a smaller one sampled (the hash is fixed per photo).
    assert set(sampled) <= {i for i in images if threshold_filter.in_audit_sample(i, 0.2)}
    assert not any(threshold_filter.in_audit_sample(i, 0.0) for i in images)
    assert all(threshold_filter.in_audit_sample(i, 1.0) for i in images)


@pytest.mark.parametrize(("rate", "audited"), [("1", True), ("0", False), (" 1.0 ", True)])
def test_the_audit_rate_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, rate: str, audited: bool
) -> None:
    monkeypatch.setenv("AUDIT_RATE", rate)
    response = threshold_filter.handler(classified("incoming/c.png", 0.99, 0.01))
    assert response["decision"]["audit"] is audited


def test_the_default_audit_rate_is_the_contracts() -> None:
    assert threshold_filter.configured_audit_rate() == DEFAULT_AUDIT_RATE


@pytest.mark.parametrize("rate", ["often", "-0.1", "1.5", "nan", "inf", "5%", "x" * 10_000])
def test_a_malformed_audit_rate_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, rate: str
) -> None:
    monkeypatch.setenv("AUDIT_RATE", rate)
    with pytest.raises(ConfigurationError, match="AUDIT_RATE") as raised:
        threshold_filter.handler(classified("incoming/d.png", 0.99, 0.01))
    assert len(str(raised.value)) < 200  # a hostile value is not echoed in full


@pytest.mark.parametrize(
    ("field", "value"),
    [("endpoint", "e" * 64), ("variant", "v" * 64), ("decided_at", "9" * 33), ("variant", 7)],
)
def test_hostile_answered_fields_are_invalid_events(field: str, value: object) -> None:
    hostile = classified("incoming/e.png", 0.99, 0.01)
    hostile["body"][field] = value  # type: ignore[index]
    with pytest.raises(InvalidEvent, match=field):
        threshold_filter.handler(hostile)


def test_a_doubtful_classified_photo_is_still_stopped() -> None:
    with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET):
        threshold_filter.handler(classified("incoming/f.png", 0.6, 0.4))


def familiar_event(key: str, familiarity: float, familiar: bool, *inferences: float) -> dict:
    answered = classified(key, *inferences)
    answered["body"].update(familiarity=familiarity, familiar=familiar)  # type: ignore[union-attr]
    return answered


def test_an_unfamiliar_photo_is_stopped_whatever_its_confidence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 23: an unfamiliar photo is never routed, even at 0.999 (a softmax is confident
    about what it has never seen); the error is the name the state machine catches."""
    with pytest.raises(threshold_filter.PHOTO_UNFAMILIAR, match=r"familiarity 0\.0099"):
        threshold_filter.handler(familiar_event("incoming/u.png", 0.0099, False, 0.999, 0.001))
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["message"] == "photo unfamiliar"
    assert record["familiarity"] == 0.0099


def test_a_familiar_photo_carries_its_familiarity_into_the_decision() -> None:
    decision = threshold_filter.handler(familiar_event("incoming/v.png", 0.42, True, 0.99, 0.01))[
        "decision"
    ]
    assert decision["familiarity"] == 0.42
    assert decision["dynamodb"]["familiarity"] == {"N": "0.42"}


def test_a_doubtful_familiar_photo_is_stopped_as_doubtful() -> None:
    with pytest.raises(threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET):
        threshold_filter.handler(familiar_event("incoming/w.png", 0.5, True, 0.6, 0.4))


@pytest.mark.parametrize(
    ("familiarity", "familiar"), [(1.5, True), (-0.1, False), ("0.5", True), (0.5, "no")]
)
def test_a_malformed_familiarity_is_an_invalid_event(familiarity: object, familiar: object) -> None:
    hostile = familiar_event("incoming/x.png", 0.5, True, 0.99, 0.01)
    hostile["body"].update(familiarity=familiarity, familiar=familiar)
    with pytest.raises(InvalidEvent, match="familiar"):
        threshold_filter.handler(hostile)


def test_a_familiarity_without_its_verdict_is_an_invalid_event() -> None:
    hostile = classified("incoming/y.png", 0.99, 0.01)
    hostile["body"]["familiarity"] = 0.5  # type: ignore[index]
    with pytest.raises(InvalidEvent, match="together"):
        threshold_filter.handler(hostile)
