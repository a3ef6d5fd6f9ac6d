"""Express workflows in the local AWS, as AWS runs them (local_aws/express.py): an
asynchronous start whose history only its log group keeps, a synchronous start that
answers with the execution's end, and a stack template's type and logging honoured."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.conftest import LocalAws
from tests.local_aws.iam_helpers import state_machine_role

PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
FAIL = {
    "StartAt": "Doubtful",
    "States": {
        "Doubtful": {"Type": "Fail", "Error": "THRESHOLD_CONFIDENCE_NOT_MET", "Cause": "0.5"}
    },
}


def log_group(local: LocalAws, name: str) -> str:
    logs = local.client("logs")
    group = f"/aws/vendedlogs/states/{name}"
    logs.create_log_group(logGroupName=group)
    arn: str = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["arn"]
    return arn if arn.endswith(":*") else f"{arn}:*"


def machine(
    local: LocalAws, name: str, definition: dict[str, Any], kind: str = "EXPRESS"
) -> tuple[str, str]:
    """A state machine of `kind` logging every event, without data, to a group of its own."""
    group_arn = log_group(local, name)
    role = state_machine_role(
        local.client("iam"), f"{name}-role", [f"arn:aws:lambda:*:*:function:{name}"]
    )
    created = local.client("stepfunctions").create_state_machine(
        name=name,
        definition=json.dumps(definition),
        roleArn=role,
        type=kind,
        loggingConfiguration={
            "level": "ALL",
            "includeExecutionData": False,
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group_arn}}],
        },
    )
    return str(created["stateMachineArn"]), f"/aws/vendedlogs/states/{name}"


def logged_records(local: LocalAws, group: str, ends: int) -> list[dict[str, Any]]:
    """The group's records once `ends` executions have logged their last event."""
    logs = local.client("logs")
    deadline = time.monotonic() + 60
    while True:
        events = logs.filter_log_events(logGroupName=group)["events"]
        records = [json.loads(event["message"]) for event in events]
        if (
            sum(
                1
                for r in records
                if r["type"].startswith("Execution") and r["type"] != "ExecutionStarted"
            )
            >= ends
        ):
            return records
        assert time.monotonic() < deadline, records
        time.sleep(0.2)


def test_an_asynchronous_express_execution_keeps_its_history_only_in_its_log_group(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """Step Functions developer guide, "Execution guarantees": an asynchronous Express
    start is not idempotent ("Starting multiple workflows with the same name results in
    concurrent executions") and "Execution history is not captured by Step Functions";
    "Using CloudWatch Logs to log execution history": Express workflows "don't record
    execution history in AWS Step Functions", only in the log group. ListExecutions: "This
    API action is not supported by EXPRESS state machines" (StateMachineTypeNotSupported);
    DescribeExecution and GetExecutionHistory refuse an Express execution's ARN
    (InvalidArn). Records carry no execution data when includeExecutionData is false."""
    sfn = workflow_aws.client("stepfunctions")
    arn, group = machine(workflow_aws, unique_name, PASS)
    starts = [
        sfn.start_execution(stateMachineArn=arn, name="same", input='{"image": "secret"}')
        for _ in range(2)
    ]
    executions = {start["executionArn"] for start in starts}
    assert len(executions) == 2
    for execution in executions:
        assert execution.split(":")[5:8] == ["express", unique_name, "same"]
        for call in (sfn.describe_execution, sfn.get_execution_history):
            with pytest.raises(ClientError) as refused:
                call(executionArn=execution)
            assert refused.value.response["Error"]["Code"] == "InvalidArn"
    with pytest.raises(ClientError) as refused:
        sfn.list_executions(stateMachineArn=arn)
    assert refused.value.response["Error"]["Code"] == "StateMachineTypeNotSupported"

    records = logged_records(workflow_aws, group, ends=2)
    assert {r["execution_arn"] for r in records} == executions
    for execution in executions:
        types = [r["type"] for r in records if r["execution_arn"] == execution]
        assert types == [
            "ExecutionStarted",
            "PassStateEntered",
            "PassStateExited",
            "ExecutionSucceeded",
        ]
    first = records[0]
    assert set(first) == {
        "id", "type", "details", "previous_event_id", "event_timestamp", "execution_arn",
        "redrive_count",
    }  # fmt: skip
    assert first["event_timestamp"].isdigit()
    assert "secret" not in json.dumps(records)


def test_a_synchronous_express_execution_answers_with_its_end(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """StartSyncExecution (API reference): it "will return a 200 OK response, even if your
    execution fails": status SUCCEEDED with the output, or FAILED with the error and cause,
    and billingDetails (Express bills memory in 64-MB chunks and duration in 100-ms units,
    Step Functions pricing). "StartSyncExecution is not available for STANDARD workflows"
    (StateMachineTypeNotSupported), and its `input` is at most 262,144 bytes."""
    sfn = workflow_aws.client("stepfunctions")
    passing, _ = machine(workflow_aws, unique_name, PASS)
    ended = sfn.start_sync_execution(stateMachineArn=passing, input='{"label": 1}')
    assert ended["status"] == "SUCCEEDED"
    assert json.loads(ended["output"]) == {"label": 1}
    assert ended["executionArn"].split(":")[5] == "express"
    assert ended["billingDetails"]["billedMemoryUsedInMB"] == 64
    assert ended["billingDetails"]["billedDurationInMilliseconds"] % 100 == 0
    assert ended["billingDetails"]["billedDurationInMilliseconds"] >= 100

    failing, group = machine(workflow_aws, f"{unique_name}-fail", FAIL)
    ended = sfn.start_sync_execution(stateMachineArn=failing, input="{}")
    assert (ended["status"], ended["error"], ended["cause"]) == (
        "FAILED", "THRESHOLD_CONFIDENCE_NOT_MET", "0.5",
    )  # fmt: skip
    assert "output" not in ended
    # The alarms' metric filters read these two fields of the records (serverless.yml).
    records = logged_records(workflow_aws, group, ends=1)
    assert {"type": "FailStateEntered", "name": "Doubtful"} in [
        {"type": r["type"], "name": r["details"].get("name")} for r in records
    ]
    assert "ExecutionFailed" in [r["type"] for r in records]

    with pytest.raises(ClientError) as refused:
        sfn.start_sync_execution(stateMachineArn=passing, input=json.dumps({"x": "x" * 262_144}))
    assert refused.value.response["Error"]["Code"] == "ValidationException"

    standard, _ = machine(workflow_aws, f"{unique_name}-standard", PASS, kind="STANDARD")
    with pytest.raises(ClientError) as refused:
        sfn.start_sync_execution(stateMachineArn=standard, input="{}")
    assert refused.value.response["Error"]["Code"] == "StateMachineTypeNotSupported"


def test_a_stack_makes_the_state_machine_of_its_type_with_its_logging(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """AWS::StepFunctions::StateMachine (CloudFormation template reference):
    StateMachineType is STANDARD or EXPRESS, and LoggingConfiguration's Level,
    IncludeExecutionData and Destinations are the API's loggingConfiguration."""
    role = state_machine_role(
        workflow_aws.client("iam"),
        f"{unique_name}-role",
        [f"arn:aws:lambda:*:*:function:{unique_name}"],
    )
    template = {
        "Resources": {
            "Group": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": unique_name}},
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "StateMachineName": unique_name,
                    "DefinitionString": json.dumps(PASS),
                    "RoleArn": role,
                    "StateMachineType": "EXPRESS",
                    "LoggingConfiguration": {
                        "Level": "ALL",
                        "IncludeExecutionData": False,
                        "Destinations": [
                            {
                                "CloudWatchLogsLogGroup": {
                                    "LogGroupArn": {"Fn::GetAtt": ["Group", "Arn"]}
                                }
                            }
                        ],
                    },
                },
            },
        }
    }
    cloudformation = workflow_aws.client("cloudformation")
    cloudformation.create_stack(
        StackName=f"s{uuid.uuid4().hex[:8]}", TemplateBody=json.dumps(template)
    )
    sfn = workflow_aws.client("stepfunctions")
    arn = next(
        m["stateMachineArn"]
        for m in sfn.list_state_machines()["stateMachines"]
        if m["name"] == unique_name
    )
    described = sfn.describe_state_machine(stateMachineArn=arn)
    assert described["type"] == "EXPRESS"
    assert described["loggingConfiguration"]["level"] == "ALL"
    assert described["loggingConfiguration"]["includeExecutionData"] is False
    assert sfn.start_sync_execution(stateMachineArn=arn, input="{}")["status"] == "SUCCEEDED"
    assert logged_records(workflow_aws, unique_name, ends=1)


@pytest.mark.parametrize(("own", "expected"), [(None, 300), (600, 300), (60, 60)])
def test_an_express_program_times_out_at_five_minutes_or_its_own_sooner_timeout(
    own: int | None, expected: int
) -> None:
    """ "Express Workflows can run for up to five minutes" (Step Functions developer guide,
    "Standard vs. Express Workflows"): the program an Express execution runs gets that
    timeout unless its definition's TimeoutSeconds is shorter; the parsed program itself,
    shared by every execution of the definition (local_aws.server), keeps its own. (A
    running execution is not waited out here: that would take five minutes.)"""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    from local_aws.express import cap_at_five_minutes

    definition = dict(PASS, **({"TimeoutSeconds": own} if own else {}))
    program = AmazonStateLanguageParser.parse(json.dumps(definition))[0]

    class Worker:  # the one method of moto's ExecutionWorker the cap wraps
        def _get_evaluation_entrypoint(self) -> Any:
            return program

    worker = Worker()
    cap_at_five_minutes(worker)
    capped = worker._get_evaluation_entrypoint()
    assert capped.timeout_seconds.timeout_seconds == expected
    assert capped is not program
    assert getattr(program.timeout_seconds, "timeout_seconds", None) == own
