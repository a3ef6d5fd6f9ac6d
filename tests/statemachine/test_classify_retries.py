"""The endpoint's transient errors are retried at one layer, the state machine's: the real
Classify state (as `sls package` resolves it) runs the real classify package in the local
AWS against a real HTTP server that answers errors, then success."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.handlers.conftest import Answer, RuntimeServer, encode_image, runtime_error
from tests.local_aws.iam_helpers import state_machine_role
from tests.statemachine.packaging import package, resolve_definition

ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "*"}
    ],
}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`sls package`'s directory (the zips) and its template."""
    out = tmp_path_factory.mktemp("package")
    return out, package("local", out)


@pytest.fixture
def classify_machine(
    local_aws: dict[str, str],
    packaged: tuple[Path, dict[str, Any]],
    runtime_server: RuntimeServer,
    unique_name: str,
) -> str:
    """The deployed classify package behind the workflow's own Classify state."""
    out, template = packaged
    definition = resolve_definition(template)
    classify_function = template["Resources"]["ClassifyLambdaFunction"]["Properties"]
    role = boto3.client("iam").create_role(
        RoleName=unique_name, AssumeRolePolicyDocument=json.dumps(ASSUME)
    )["Role"]["Arn"]
    function_arn = boto3.client("lambda").create_function(
        FunctionName=unique_name,
        Runtime="python3.11",
        Role=role,
        Handler="handlers/classify.handler",
        Code={"ZipFile": (out / "classify.zip").read_bytes()},
        Timeout=classify_function["Timeout"],  # serverless.yml's
        Environment={
            "Variables": {
                "ENDPOINT_NAME": unique_name,
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_server.url,
            }
        },
    )["FunctionArn"]
    classify = copy.deepcopy(definition["States"]["Classify"])
    classify["Parameters"]["FunctionName"] = function_arn
    classify.pop("Next")
    classify["End"] = True
    # Only the states this machine has: a bad upload's catch leads to the rejection states.
    classify["Catch"] = [c for c in classify["Catch"] if c["Next"] == "WorkflowFailed"]
    machine = {
        "StartAt": "Classify",
        "States": {"Classify": classify, "WorkflowFailed": definition["States"]["WorkflowFailed"]},
    }
    runtime_server.answers[unique_name] = Answer()
    machine_role = state_machine_role(boto3.client("iam"), f"{unique_name}-machine", [function_arn])
    arn: str = boto3.client("stepfunctions").create_state_machine(
        name=unique_name, definition=json.dumps(machine), roleArn=machine_role
    )["stateMachineArn"]
    return arn


def execute(machine_arn: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sfn = boto3.client("stepfunctions")
    image = base64.b64encode(encode_image("PNG")).decode()
    event = {"image_data": image, "s3_bucket": "b", "s3_key": "test/a.png", "inferences": []}
    arn = sfn.start_execution(stateMachineArn=machine_arn, input=json.dumps(event))["executionArn"]
    deadline = time.monotonic() + 90
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.2)
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return described, history


def handler_errors(history: list[dict[str, Any]]) -> list[str]:
    return [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]


def test_throttling_and_503_are_retried_by_the_state_machine_then_succeed(
    classify_machine: str,
    runtime_server: RuntimeServer,
    unique_name: str,
) -> None:
    runtime_server.queued[unique_name] = [
        runtime_error(503, "ServiceUnavailable", "Service is unavailable"),
        runtime_error(400, "ThrottlingException", "Rate exceeded"),
    ]
    described, history = execute(classify_machine)
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"])["body"]["inferences"] == [0.973, 0.027]
    assert handler_errors(history) == ["EndpointUnavailable", "EndpointUnavailable"]
    calls = [r for r in runtime_server.requests if r["endpoint"] == unique_name]
    assert len(calls) == 3  # one request per invocation: botocore retried none


def test_an_endpoint_that_stays_unavailable_is_tried_once_per_state_attempt(
    classify_machine: str,
    runtime_server: RuntimeServer,
    unique_name: str,
) -> None:
    runtime_server.answers[unique_name] = runtime_error(503, "ServiceUnavailable", "down")
    described, history = execute(classify_machine)
    assert described["status"] == "FAILED"
    assert described["error"] == "WorkflowFailed"
    # 1 attempt + MaxAttempts retries, and no more: 4 calls, not 4 x botocore's 3.
    assert handler_errors(history) == ["EndpointUnavailable"] * 4
    assert len([r for r in runtime_server.requests if r["endpoint"] == unique_name]) == 4


def test_a_model_error_is_final_and_not_retried(
    classify_machine: str,
    runtime_server: RuntimeServer,
    unique_name: str,
) -> None:
    message = "Received client error (400) from primary with message: cannot decode image"
    runtime_server.answers[unique_name] = runtime_error(424, "ModelError", message)
    described, history = execute(classify_machine)
    assert described["status"] == "FAILED"
    assert handler_errors(history) == ["EndpointError"]
    assert len([r for r in runtime_server.requests if r["endpoint"] == unique_name]) == 1


def test_a_hung_endpoint_ends_in_endpoint_timeout_before_lambda_ends_the_function(
    classify_machine: str, runtime_server: RuntimeServer, unique_name: str
) -> None:
    # The configured timeouts, in the deployed package with serverless.yml's function
    # timeout: the handler's own named error comes first, not Lambda's Sandbox.Timedout.
    runtime_server.answers[unique_name] = Answer(hang=True)
    described, history = execute(classify_machine)
    assert described["status"] == "FAILED"
    assert handler_errors(history) == ["EndpointTimeout"]  # final: not retried
