"""The trigger's failed deliveries in the local AWS (local_aws/events.py): an upload whose
execution cannot be started lands in the target's dead-letter queue as EventBridge puts
it there, or, when the queue's policy does not let EventBridge send, is counted lost."""

from __future__ import annotations

import json
from typing import Any

import boto3

from tests.local_aws.iam_helpers import state_machine_role

PASS_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


def events_role(name: str) -> str:
    """A role EventBridge may assume, allowed nothing (so StartExecution is refused)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = boto3.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
    )
    return str(role["Role"]["Arn"])


def queue(name: str, rule_arn: str | None) -> tuple[str, str]:
    """An SQS queue (URL, ARN), with the policy serverless.yml gives the trigger's
    dead-letter queue when `rule_arn` is given, else with none."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    if rule_arn:
        statement = {
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url, arn


def trigger(name: str, bucket: str) -> str:
    """The workflow's trigger, shaped as serverless.yml writes it; returns the rule's ARN."""
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "incoming/"}]}},
    }
    return str(
        boto3.client("events").put_rule(Name=name, EventPattern=json.dumps(pattern))["RuleArn"]
    )


def target(machine_arn: str, role_arn: str, queue_arn: str) -> dict[str, Any]:
    return {
        "Id": "workflow",
        "Arn": machine_arn,
        "RoleArn": role_arn,
        "InputTransformer": {
            "InputPathsMap": {"key": "$.detail.object.key"},
            "InputTemplate": '{"s3_key": <key>}',
        },
        "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
        "DeadLetterConfig": {"Arn": queue_arn},
    }


def rule_metric(rule: str, metric: str) -> float:
    statistics = boto3.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Events",
        MetricName=metric,
        Dimensions=[{"Name": "RuleName", "Value": rule}],
        StartTime="2000-01-01T00:00:00Z",
        EndTime="2100-01-01T00:00:00Z",
        Period=86400 * 365,
        Statistics=["Sum"],
    )
    return float(sum(point["Sum"] for point in statistics["Datapoints"]))


def test_an_upload_whose_execution_is_refused_lands_in_the_dead_letter_queue(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """EventBridge User Guide, "Using dead-letter queues to process undelivered events":
    an event whose target invocation fails for missing permissions is not retried but
    sent to the target's DLQ, with the RULE_ARN, TARGET_ARN, ERROR_CODE and ERROR_MESSAGE
    message attributes, and counted in InvocationsSentToDLQ; the queue's policy must let
    events.amazonaws.com sqs:SendMessage (aws:SourceArn the rule). Before the local AWS
    honoured DeadLetterConfig the event vanished (only FailedInvocations counted it)."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_bucket_notification_configuration(
        Bucket=unique_name, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    machine = boto3.client("stepfunctions").create_state_machine(
        name=unique_name,
        definition=json.dumps(PASS_MACHINE),
        roleArn=state_machine_role(boto3.client("iam"), f"{unique_name}-machine", ["*"]),
    )["stateMachineArn"]
    role = events_role(f"{unique_name}-trigger")
    rule_arn = trigger(unique_name, unique_name)
    queue_url, queue_arn = queue(unique_name, rule_arn)
    boto3.client("events").put_targets(Rule=unique_name, Targets=[target(machine, role, queue_arn)])

    s3.put_object(Bucket=unique_name, Key="incoming/bike.png", Body=b"photo")

    messages = (
        boto3.client("sqs")
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )
    assert len(messages) == 1
    event = json.loads(messages[0]["Body"])
    assert event["detail-type"] == "Object Created"
    assert event["detail"]["object"]["key"] == "incoming/bike.png"
    attributes = {k: v["StringValue"] for k, v in messages[0]["MessageAttributes"].items()}
    assert attributes["RULE_ARN"] == rule_arn
    assert attributes["TARGET_ARN"] == machine
    assert attributes["ERROR_CODE"] == "NO_PERMISSIONS"
    assert "states:StartExecution" in attributes["ERROR_MESSAGE"]
    assert (
        boto3.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"] == []
    )
    assert rule_metric(unique_name, "FailedInvocations") == 1
    assert rule_metric(unique_name, "InvocationsSentToDLQ") == 1


def test_a_dead_letter_queue_whose_policy_refuses_eventbridge_gets_nothing(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """Without a queue policy for events.amazonaws.com and the rule, EventBridge cannot
    send the event to the DLQ (the same guide: the DLQ needs the permission): the event
    is lost and counted in InvocationsFailedToBeSentToDLQ, which serverless.yml alarms on."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_bucket_notification_configuration(
        Bucket=unique_name, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    machine = boto3.client("stepfunctions").create_state_machine(
        name=unique_name,
        definition=json.dumps(PASS_MACHINE),
        roleArn=state_machine_role(boto3.client("iam"), f"{unique_name}-machine", ["*"]),
    )["stateMachineArn"]
    role = events_role(f"{unique_name}-trigger")
    trigger(unique_name, unique_name)
    queue_url, queue_arn = queue(unique_name, None)
    boto3.client("events").put_targets(Rule=unique_name, Targets=[target(machine, role, queue_arn)])

    s3.put_object(Bucket=unique_name, Key="incoming/bike.png", Body=b"photo")

    assert "Messages" not in boto3.client("sqs").receive_message(QueueUrl=queue_url)
    assert rule_metric(unique_name, "InvocationsFailedToBeSentToDLQ") == 1
    assert rule_metric(unique_name, "InvocationsSentToDLQ") == 0
