"""The image workflow's definition, as `sls package` resolves it into the template:
valid Amazon States Language (asl-validator), and the behaviour the design asks for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.statemachine.packaging import REPO_ROOT, package, resolve_definition

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
    assert states["FilterLowConfidence"]["End"] is True


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


def test_a_doubtful_inference_ends_in_its_own_fail_state(definition: dict[str, Any]) -> None:
    first_catch = definition["States"]["FilterLowConfidence"]["Catch"][0]
    assert first_catch == {
        "ErrorEquals": ["THRESHOLD_CONFIDENCE_NOT_MET"],
        "Next": "ConfidenceTooLow",
    }
    stop = definition["States"]["ConfidenceTooLow"]
    assert stop["Type"] == "Fail"
    assert stop["Error"] == "THRESHOLD_CONFIDENCE_NOT_MET"
    assert "THRESHOLD" in stop["Cause"]
    assert stop != definition["States"]["WorkflowFailed"]


def test_only_the_threshold_filter_catches_the_threshold_error(
    definition: dict[str, Any],
) -> None:
    for state in ("Serialize", "Classify"):
        caught = {e for c in definition["States"][state]["Catch"] for e in c["ErrorEquals"]}
        assert caught == {"States.ALL"}
