"""The image workflow's definition, as `sls package` resolves it into the template:
valid Amazon States Language (asl-validator), and the behaviour the design asks for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from contract.decisions import (
    EVENT_DETAIL_TYPE,
    EVENT_SOURCE,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REASON_UNFAMILIAR,
    REJECTION_REASONS,
    REVIEW_PENDING,
    SOURCE_MODEL,
    STATUS_NEEDS_REVIEW,
    STATUS_REJECTED,
    STATUS_ROUTED,
)
from tests.statemachine.packaging import REPO_ROOT, package, resolve_definition

# What the workflow writes: contract/decisions.py's attributes, less the person's answer.
WRITTEN_ATTRIBUTES = {
    "image", "label", "confidence", "inferences", "model_version", "endpoint", "variant",
    "decided_at", "execution", "status", "source", "revision", "review_reason",
    "review_pending", "queued_at", "event_pending", "rejection", "rejection_cause",
    "familiarity",
}  # fmt: skip

ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
TASKS = {
    "Serialize": "scones-unlimited-local-serialize",
    "Classify": "scones-unlimited-local-classify",
    "FilterLowConfidence": "scones-unlimited-local-thresholdFilter",
}


@pytest.fixture(scope="module")
def definition(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolve_definition(package("local", tmp_path_factory.mktemp("package")))


def validate(definition: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    return subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_resolved_definition_is_valid_asl(definition: dict[str, Any], tmp_path: Path) -> None:
    result = validate(definition, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_the_validator_rejects_a_broken_definition(
    definition: dict[str, Any], tmp_path: Path
) -> None:
    # The check above means something only if the validator can fail.
    broken = json.loads(json.dumps(definition))
    broken["States"]["Classify"]["Next"] = "NoSuchState"
    assert validate(broken, tmp_path).returncode != 0


def test_the_three_handlers_run_in_order(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] == "Serialize"
    assert states["Serialize"]["Next"] == "Classify"
    assert states["Classify"]["Next"] == "FilterLowConfidence"
    assert states["FilterLowConfidence"]["Next"] == "Audited"


@pytest.mark.parametrize(("state", "function_name"), TASKS.items())
def test_each_task_invokes_its_function_with_the_whole_state(
    definition: dict[str, Any], state: str, function_name: str
) -> None:
    task = definition["States"][state]
    assert task["Type"] == "Task"
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"] == {
        "FunctionName": f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}",
        "Payload.$": "$",
    }
    assert task["OutputPath"] == "$.Payload"


@pytest.mark.parametrize("state", TASKS)
def test_each_task_retries_lambda_service_errors_with_backoff(
    definition: dict[str, Any], state: str
) -> None:
    retry = definition["States"][state]["Retry"][0]
    assert set(retry["ErrorEquals"]) == LAMBDA_SERVICE_ERRORS
    assert retry["IntervalSeconds"] >= 1
    assert retry["BackoffRate"] > 1
    assert 2 <= retry["MaxAttempts"] <= 5


def test_only_classify_retries_a_handler_error_and_only_the_transient_endpoint_one(
    definition: dict[str, Any],
) -> None:
    # handlers/classify.py makes one attempt per invocation (no botocore retries): the
    # state machine is the one layer that retries the endpoint.
    assert len(definition["States"]["Serialize"]["Retry"]) == 1
    assert len(definition["States"]["FilterLowConfidence"]["Retry"]) == 1
    _service, endpoint = definition["States"]["Classify"]["Retry"]
    assert endpoint["ErrorEquals"] == ["EndpointUnavailable"]
    assert endpoint["IntervalSeconds"] >= 1
    assert endpoint["BackoffRate"] > 1
    assert 2 <= endpoint["MaxAttempts"] <= 4


@pytest.mark.parametrize("state", TASKS)
def test_any_other_error_ends_in_workflow_failed(definition: dict[str, Any], state: str) -> None:
    last_catch = definition["States"][state]["Catch"][-1]
    assert last_catch == {"ErrorEquals": ["States.ALL"], "Next": "WorkflowFailed"}
    failed = definition["States"]["WorkflowFailed"]
    assert failed["Type"] == "Fail"
    assert failed["Error"] == "WorkflowFailed"
    assert failed["Cause"]


def test_a_doubtful_inference_is_queued_then_ends_in_its_own_fail_state(
    definition: dict[str, Any],
) -> None:
    first_catch = definition["States"]["FilterLowConfidence"]["Catch"][0]
    # The error goes beside the input: the decision classify returned survives the Catch.
    assert first_catch == {
        "ErrorEquals": ["THRESHOLD_CONFIDENCE_NOT_MET"],
        "ResultPath": "$.gate",
        "Next": "QueueForReview",
    }
    queue = definition["States"]["QueueForReview"]
    assert queue["Next"] == "ConfidenceTooLow"
    # Queued already (a rerun): still stopped at the gate; any other failure is a failure.
    assert [(c["ErrorEquals"], c["Next"]) for c in queue["Catch"]] == [
        (["DynamoDB.ConditionalCheckFailedException"], "ConfidenceTooLow"),
        (["States.ALL"], "WorkflowFailed"),
    ]
    stop = definition["States"]["ConfidenceTooLow"]
    assert stop["Type"] == "Fail"
    assert stop["Error"] == "THRESHOLD_CONFIDENCE_NOT_MET"
    assert "THRESHOLD" in stop["Cause"]
    assert stop != definition["States"]["WorkflowFailed"]


def test_an_unfamiliar_photo_is_queued_with_its_reason_then_ends_in_its_own_fail_state(
    definition: dict[str, Any],
) -> None:
    """Issue 23: the threshold filter's PHOTO_UNFAMILIAR (raised whatever the confidence) is
    caught beside the decision, queued for review as `unfamiliar`, and never routed."""
    states = definition["States"]
    catches = states["FilterLowConfidence"]["Catch"]
    assert catches[1] == {
        "ErrorEquals": ["PHOTO_UNFAMILIAR"],
        "ResultPath": "$.gate",
        "Next": "QueueUnfamiliar",
    }
    queue = states["QueueUnfamiliar"]
    assert queue["Next"] == "PhotoUnfamiliar"
    assert queue["Parameters"]["Item"]["familiarity.$"] == "$.decision.dynamodb.familiarity"
    assert [(c["ErrorEquals"], c["Next"]) for c in queue["Catch"]] == [
        (["DynamoDB.ConditionalCheckFailedException"], "PhotoUnfamiliar"),
        (["States.ALL"], "WorkflowFailed"),
    ]
    stop = states["PhotoUnfamiliar"]
    assert (stop["Type"], stop["Error"]) == ("Fail", "PHOTO_UNFAMILIAR")
    assert "unfamiliar" in stop["Cause"]


def test_only_the_threshold_filter_catches_the_threshold_error(
    definition: dict[str, Any],
) -> None:
    for state in ("Serialize", "Classify"):
        caught = {e for c in definition["States"][state]["Catch"] for e in c["ErrorEquals"]}
        assert caught == {"States.ALL", *REJECTION_REASONS}


@pytest.mark.parametrize(
    ("state", "result_path", "next_state"),
    [
        ("Serialize", "$.rejection", "IdentifyRejectedUpload"),
        ("Classify", "$.body.rejection", "UnwrapRejectedUpload"),
    ],
)
def test_a_refused_upload_is_recorded_as_rejected_and_ends_in_its_own_fail_state(
    definition: dict[str, Any], state: str, result_path: str, next_state: str
) -> None:
    """A bad upload is the driver's, not an endpoint outage (issue 21, item 13): the
    handlers' errors for it are caught before States.ALL, beside the event (the id needs
    the event's bucket, key and ETag), and end in a rejected decision item."""
    first_catch = definition["States"][state]["Catch"][0]
    assert first_catch == {
        "ErrorEquals": list(REJECTION_REASONS),
        "ResultPath": result_path,
        "Next": next_state,
    }
    states = definition["States"]
    record = states["RecordRejection"]
    item = record["Parameters"]["Item"]
    assert item["status"] == {"S": STATUS_REJECTED}
    assert item["rejection"] == {"S.$": "$.rejection.Error"}
    assert {name.removesuffix(".$") for name in item} <= WRITTEN_ATTRIBUTES
    assert record["Parameters"]["ReturnValues"] == "NONE"
    assert record["Next"] == "UploadRejected"
    assert (states["UploadRejected"]["Type"], states["UploadRejected"]["Error"]) == (
        "Fail",
        "UploadRejected",
    )


DECISION_WRITES = {
    "RecordDecision": (STATUS_ROUTED, None),
    "RecordAuditedDecision": (STATUS_ROUTED, REASON_AUDIT),
    "QueueForReview": (STATUS_NEEDS_REVIEW, REASON_DOUBTFUL),
    "QueueUnfamiliar": (STATUS_NEEDS_REVIEW, REASON_UNFAMILIAR),
}


@pytest.mark.parametrize(("state", "expected"), DECISION_WRITES.items())
def test_each_decision_is_one_conditional_put_in_the_contracts_shape(
    definition: dict[str, Any], state: str, expected: tuple[str, str | None]
) -> None:
    status, reason = expected
    task = definition["States"][state]
    assert task["Resource"] == "arn:aws:states:::dynamodb:putItem"
    assert task["ResultPath"] is None  # the decision stays the state's data for the event
    parameters = task["Parameters"]
    assert parameters["TableName"] == "scones-unlimited-local-decisions"
    item = parameters["Item"]
    assert item["image"] == {"S.$": "$.decision.image"}
    assert item["status"] == {"S": status}
    assert item["source"] == {"S": SOURCE_MODEL}
    assert item["execution"] == {"S.$": "$$.Execution.Id"}
    assert item["revision"] == {"N": "0"}
    # A routed decision's event is still to be put (the outbox); a doubtful one has none.
    assert ("event_pending" in item) == (status == STATUS_ROUTED)
    # The role allows a write only with ReturnValues NONE (serverless.yml).
    assert parameters["ReturnValues"] == "NONE"
    if reason is None:
        assert not {"review_reason", "review_pending", "queued_at"} & set(item)
    else:
        assert item["review_reason"] == {"S": reason}
        assert item["review_pending"] == {"S": REVIEW_PENDING}
        assert item["queued_at"] == {"S.$": "$.decision.decided_at"}
    assert {name.removesuffix(".$") for name in item} <= WRITTEN_ATTRIBUTES
    # One decision per photo, whichever execution comes second.
    assert parameters["ConditionExpression"] == (
        "attribute_not_exists(#image) OR (#execution = :execution AND #revision = :first)"
    )


def test_a_photo_decided_before_ends_without_a_second_event(definition: dict[str, Any]) -> None:
    states = definition["States"]
    for state in ("RecordDecision", "RecordAuditedDecision"):
        assert states[state]["Next"] == "PublishDecision"
        first_catch = states[state]["Catch"][0]
        assert first_catch["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"]
        assert first_catch["Next"] == "AlreadyDecided"
    assert states["AlreadyDecided"]["Type"] == "Succeed"
    audited = states["Audited"]
    assert audited["Choices"] == [
        {"Variable": "$.decision.audit", "BooleanEquals": True, "Next": "RecordAuditedDecision"}
    ]
    assert audited["Default"] == "RecordDecision"


def test_the_routing_event_is_the_contracts(definition: dict[str, Any]) -> None:
    publish = definition["States"]["PublishDecision"]
    assert publish["Resource"] == "arn:aws:states:::events:putEvents"
    assert publish["Next"] == "MarkEventSent"
    (entry,) = publish["Parameters"]["Entries"]
    assert entry["EventBusName"] == "default"
    assert (entry["Source"], entry["DetailType"]) == (EVENT_SOURCE, EVENT_DETAIL_TYPE)
    detail = entry["Detail"]
    assert (detail["source"], detail["status"]) == (SOURCE_MODEL, STATUS_ROUTED)
    assert {name.removesuffix(".$") for name in detail} == {
        "image", "label", "confidence", "model_version", "endpoint", "variant",
        "decided_at", "execution", "source", "status",
    }  # fmt: skip
    assert publish["Catch"] == [{"ErrorEquals": ["States.ALL"], "Next": "WorkflowFailed"}]


def test_every_transient_put_events_error_is_retried_then_the_outbox_mark_cleared(
    definition: dict[str, Any],
) -> None:
    """Routing events are never lost (issue 21, item 7): PublishDecision retries every
    transient error with backoff, not only a failed entry, and only then clears the
    decision's outbox mark, with an UpdateItem of its own execution's item."""
    publish = definition["States"]["PublishDecision"]
    (retry,) = publish["Retry"]
    assert set(retry["ErrorEquals"]) == {
        "EventBridge.FailedEntry",
        "EventBridge.InternalException",
        "EventBridge.ThrottlingException",
        "EventBridge.SdkClientException",
        "States.Timeout",
    }
    assert retry["BackoffRate"] > 1
    assert retry["MaxAttempts"] >= 3
    mark = definition["States"]["MarkEventSent"]
    assert mark["Resource"] == "arn:aws:states:::dynamodb:updateItem"
    parameters = mark["Parameters"]
    assert parameters["UpdateExpression"] == "REMOVE #event_pending"
    assert parameters["ConditionExpression"] == "#execution = :execution"
    assert parameters["ReturnValues"] == "NONE"
    assert mark["End"] is True
