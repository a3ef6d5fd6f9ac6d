"""Step Functions' payload limit in the local AWS, as AWS enforces it: a state's result over
256 KiB fails the execution with States.DataLimitExceeded, which a Catch on States.ALL does
not catch, and StartExecution refuses a larger input (local_aws/stepfunctions.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.conftest import LocalAws, wait_for_execution
from tests.local_aws.iam_helpers import state_machine_role
from tests.local_aws.lambda_helpers import create, package

STATE_LIMIT_BYTES = 256 * 1024

RETURN_SIZED = """
def handler(event, context):
    return {"data": "x" * event["bytes"]}
"""


def machine(local: LocalAws, name: str, function_arn: str) -> str:
    """A one-task workflow shaped like ours: lambda:invoke, then any error is caught."""
    definition = {
        "StartAt": "Task",
        "States": {
            "Task": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Fail", "Error": "Caught", "Cause": "a Catch matched"},
        },
    }
    role = state_machine_role(local.client("iam"), f"{name}-machine", [function_arn])
    created = local.client("stepfunctions").create_state_machine(
        name=name, definition=json.dumps(definition), roleArn=role
    )
    arn: str = created["stateMachineArn"]
    return arn


def run(local: LocalAws, machine_arn: str, event: dict[str, Any]) -> dict[str, Any]:
    sfn = local.client("stepfunctions")
    started = sfn.start_execution(stateMachineArn=machine_arn, input=json.dumps(event))
    return wait_for_execution(sfn, started["executionArn"])


@pytest.fixture
def sized_machine(workflow_aws: LocalAws, unique_name: str) -> str:
    lambda_ = create(
        workflow_aws, unique_name, "sized.handler", code=package({"sized.py": RETURN_SIZED})
    )
    function_arn = lambda_.get_function(FunctionName=unique_name)["Configuration"]["FunctionArn"]
    return machine(workflow_aws, unique_name, function_arn)


def test_a_result_over_256_kib_fails_the_execution_past_a_catch_on_states_all(
    workflow_aws: LocalAws, sized_machine: str
) -> None:
    described = run(workflow_aws, sized_machine, {"bytes": STATE_LIMIT_BYTES})
    assert described["status"] == "FAILED"
    assert described["error"] == "States.DataLimitExceeded"


def test_a_result_under_the_limit_passes(workflow_aws: LocalAws, sized_machine: str) -> None:
    described = run(workflow_aws, sized_machine, {"bytes": STATE_LIMIT_BYTES - 4096})
    assert described["status"] == "SUCCEEDED"
    assert len(json.loads(described["output"])["data"]) == STATE_LIMIT_BYTES - 4096


def test_a_handler_error_is_still_caught_by_states_all(
    workflow_aws: LocalAws, sized_machine: str
) -> None:
    described = run(workflow_aws, sized_machine, {"no": "bytes"})  # KeyError in the handler
    assert described["status"] == "FAILED"
    assert described["error"] == "Caught"


def test_an_execution_input_over_256_kib_is_refused_before_it_starts(
    workflow_aws: LocalAws, sized_machine: str
) -> None:
    sfn = workflow_aws.client("stepfunctions")
    padding = "p" * STATE_LIMIT_BYTES
    with pytest.raises(ClientError) as refused:
        sfn.start_execution(
            stateMachineArn=sized_machine, input=json.dumps({"bytes": 1, "padding": padding})
        )
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert sfn.list_executions(stateMachineArn=sized_machine)["executions"] == []
    described = run(workflow_aws, sized_machine, {"bytes": 1, "padding": padding[:-4096]})
    assert described["status"] == "SUCCEEDED"


def test_a_task_invokes_lambda_with_the_state_machines_role_and_its_policy_is_enforced(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    # The interpreter's Lambda calls reach the Lambda service inside the local AWS's own
    # process (local_aws.server.answer_own_requests_in_process): they are still signed
    # with the state machine's role and evaluated, so a function its policy does not name
    # fails the task with Lambda's AccessDeniedException, and the named one runs.
    lambda_ = create(
        workflow_aws, unique_name, "sized.handler", code=package({"sized.py": RETURN_SIZED})
    )
    function_arn = lambda_.get_function(FunctionName=unique_name)["Configuration"]["FunctionArn"]
    definition = {
        "StartAt": "Task",
        "States": {
            "Task": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "End": True,
            }
        },
    }
    sfn = workflow_aws.client("stepfunctions")
    iam_client = workflow_aws.client("iam")
    outcomes = {}
    for name, allowed in (("denied", f"{function_arn}-other"), ("allowed", function_arn)):
        role = state_machine_role(iam_client, f"{unique_name}-{name}", [allowed])
        arn = sfn.create_state_machine(
            name=f"{unique_name}-{name}", definition=json.dumps(definition), roleArn=role
        )["stateMachineArn"]
        outcomes[name] = run(workflow_aws, arn, {"bytes": 3})
    assert outcomes["denied"]["status"] == "FAILED"
    assert outcomes["denied"]["error"] == "Lambda.AccessDeniedException", outcomes["denied"][
        "cause"
    ]
    assert (
        f"is not authorized to perform: lambda:InvokeFunction on resource: {function_arn}"
        in outcomes["denied"]["cause"]
    )
    assert outcomes["allowed"]["status"] == "SUCCEEDED"
    assert json.loads(outcomes["allowed"]["output"]) == {"data": "xxx"}


def test_a_role_step_functions_may_not_assume_fails_the_task_with_lambdas_access_denied(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """A state machine whose role's trust names another state machine (aws:SourceArn, as
    serverless.yml's ImageWorkflowRole does for its own) cannot act as that role: the task
    fails as a refused Lambda call, `Lambda.AccessDeniedException` with an AccessDenied
    cause a Catch on States.ALL can see, never `States.Runtime` with `KeyError('RequestId')`
    (Step Functions developer guide, "Error names": States.Runtime is an exception that
    could not be processed, which no Catch on States.ALL catches)."""
    lambda_ = create(
        workflow_aws, unique_name, "sized.handler", code=package({"sized.py": RETURN_SIZED})
    )
    function_arn = lambda_.get_function(FunctionName=unique_name)["Configuration"]["FunctionArn"]
    iam_client = workflow_aws.client("iam")
    role = state_machine_role(iam_client, f"{unique_name}-untrusted", [function_arn])
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "ArnLike": {"aws:SourceArn": "arn:aws:states:*:*:stateMachine:another-machine"}
                },
            }
        ],
    }
    iam_client.update_assume_role_policy(
        RoleName=f"{unique_name}-untrusted", PolicyDocument=json.dumps(trust)
    )
    definition = {
        "StartAt": "Task",
        "States": {
            "Task": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
                "End": True,
            }
        },
    }
    arn = workflow_aws.client("stepfunctions").create_state_machine(
        name=unique_name, definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    described = run(workflow_aws, arn, {"bytes": 3})
    assert described["status"] == "FAILED"
    assert described["error"] == "Lambda.AccessDeniedException", described.get("cause")
    assert "AccessDenied" in described["cause"] or "not authorized" in described["cause"]
    assert "KeyError" not in described["cause"]
