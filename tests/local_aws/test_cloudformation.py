"""`sls deploy` and `sls invoke stepf` against the local AWS, each moto gap named, and the
reference-shaped workflow run end to end (pass, gate, Catch, Retry)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.local_aws.conftest import (
    IMAGES_BUCKET,
    STACK,
    LocalAws,
    run_sls,
    wait_for_execution,
)

MACHINE = "ImageWorkflow-local"


def machine_arn(local: LocalAws) -> str:
    machines = local.client("stepfunctions").list_state_machines()["stateMachines"]
    return next(m["stateMachineArn"] for m in machines if m["name"] == MACHINE)


def start(local: LocalAws, key: str) -> dict[str, Any]:
    sfn = local.client("stepfunctions")
    event = {"image_data": "", "s3_bucket": IMAGES_BUCKET, "s3_key": key, "inferences": []}
    arn = sfn.start_execution(
        stateMachineArn=machine_arn(local), name=uuid.uuid4().hex, input=json.dumps(event)
    )["executionArn"]
    return wait_for_execution(sfn, arn)


def history(local: LocalAws, execution_arn: str) -> list[dict[str, Any]]:
    sfn = local.client("stepfunctions")
    return list(sfn.get_execution_history(executionArn=execution_arn)["events"])


def put_image(local: LocalAws, key: str, confident: bool) -> None:
    # The stand-in endpoint is confident for even-sized bodies.
    local.client("s3").put_object(
        Bucket=IMAGES_BUCKET, Key=key, Body=b"xx" if confident else b"xxx"
    )


def test_validate_template_ignores_cfn_lint_warnings_such_as_w3005(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    template = deployed_project / ".serverless" / "cloudformation-template-update-stack.json"
    body = template.read_text()
    assert "DependsOn" in body  # the state machine's role: cfn-lint's W3005
    answer = workflow_aws.client("cloudformation").validate_template(TemplateBody=body)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_validate_template_still_refuses_errors(workflow_aws: LocalAws) -> None:
    from botocore.exceptions import ClientError

    broken = {"Resources": {"Thing": {"Type": "AWS::S3::Bucket", "Properties": {"Nope": 1}}}}
    with pytest.raises(ClientError):
        workflow_aws.client("cloudformation").validate_template(TemplateBody=json.dumps(broken))


def test_fn_sub_variables_named_by_hashes_resolve_to_the_function_arns(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    sfn = workflow_aws.client("stepfunctions")
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=machine_arn(workflow_aws))["definition"]
    )
    names = [
        state["Parameters"]["FunctionName"]
        for state in definition["States"].values()
        if state["Type"] == "Task"
    ]
    assert names == [
        f"arn:aws:lambda:us-east-1:123456789012:function:{STACK}-{name}"
        for name in ("serialize", "classify", "threshold")
    ]


def test_the_stacks_state_machine_is_served_by_the_step_functions_api(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    summaries = workflow_aws.client("cloudformation").list_stack_resources(StackName=STACK)[
        "StackResourceSummaries"
    ]
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId") for r in summaries}
    assert physical["ImageWorkflow"] == machine_arn(workflow_aws)


def test_describe_stacks_shows_the_outputs_of_the_applied_change_set(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    stack = workflow_aws.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["ImageWorkflowArn"] == machine_arn(workflow_aws)
    assert outputs["ImagesBucketName"] == IMAGES_BUCKET


def test_bucket_notification_and_public_access_block_come_from_the_template(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    s3 = workflow_aws.client("s3")
    block = s3.get_public_access_block(Bucket=IMAGES_BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    encryption = s3.get_bucket_encryption(Bucket=IMAGES_BUCKET)
    rules = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_a_confident_image_passes_the_workflow(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    put_image(workflow_aws, "test/confident.png", confident=True)
    execution = start(workflow_aws, "test/confident.png")
    assert execution["status"] == "SUCCEEDED"
    body = json.loads(execution["output"])["body"]
    assert body["inferences"] == [0.97, 0.03]
    assert body["image_data"] == "eHg="  # base64 of the object, from the serialize handler


def test_a_doubtful_image_is_stopped_by_the_threshold_with_its_error_name(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    put_image(workflow_aws, "test/doubtful.png", confident=False)
    execution = start(workflow_aws, "test/doubtful.png")
    assert execution["status"] == "FAILED"
    assert execution["error"] == "THRESHOLD_CONFIDENCE_NOT_MET"
    failures = [
        e["taskFailedEventDetails"]["error"]
        for e in history(workflow_aws, execution["executionArn"])
        if e["type"] == "TaskFailed"
    ]
    assert failures == ["THRESHOLD_CONFIDENCE_NOT_MET"]


def test_a_handler_that_raises_is_caught_by_states_all(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    execution = start(workflow_aws, "test/no-such-object.png")
    assert execution["status"] == "FAILED"
    assert execution["error"] == "WorkflowFailed"
    failures = [
        e["taskFailedEventDetails"]
        for e in history(workflow_aws, execution["executionArn"])
        if e["type"] == "TaskFailed"
    ]
    # The function's role may not s3:ListBucket, so S3 answers the missing key 403, as on AWS.
    assert [f["error"] for f in failures] == ["AccessDenied"]
    assert '"stackTrace"' in failures[0]["cause"]


def test_a_throttled_invocation_is_retried_by_the_retry_block(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    """Reserved concurrency 0 makes Lambda answer 429, Step Functions' Lambda.TooManyRequests
    Exception: the service error the Retry block names. Lifting it lets the retry pass."""
    lambda_ = workflow_aws.client("lambda")
    sfn = workflow_aws.client("stepfunctions")
    function = f"{STACK}-serialize"
    put_image(workflow_aws, "test/retried.png", confident=True)
    lambda_.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=0)
    try:
        event = {
            "image_data": "",
            "s3_bucket": IMAGES_BUCKET,
            "s3_key": "test/retried.png",
            "inferences": [],
        }
        arn = sfn.start_execution(
            stateMachineArn=machine_arn(workflow_aws),
            name=uuid.uuid4().hex,
            input=json.dumps(event),
        )["executionArn"]
        deadline = time.monotonic() + 30
        while not any(e["type"] == "TaskFailed" for e in history(workflow_aws, arn)):
            assert time.monotonic() < deadline, "the throttled attempt never failed"
            time.sleep(0.1)
    finally:
        lambda_.delete_function_concurrency(FunctionName=function)
    execution = wait_for_execution(sfn, arn)
    assert execution["status"] == "SUCCEEDED"
    failures = [
        e["taskFailedEventDetails"]["error"]
        for e in history(workflow_aws, arn)
        if e["type"] == "TaskFailed"
    ]
    assert failures and set(failures) == {"Lambda.TooManyRequestsException"}


def test_sls_invoke_stepf_prints_the_execution_and_runs_again_without_a_name(
    deployed_project: Path, workflow_aws: LocalAws
) -> None:
    put_image(workflow_aws, "test/a.png", confident=True)
    args = (
        "invoke",
        "stepf",
        "--stage",
        "local",
        "--name",
        "ImageWorkflow",
        "--path",
        "events/workflow.json",
    )
    first = run_sls(deployed_project, workflow_aws, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert '"status": "SUCCEEDED"' in first.stdout
    assert "0.97" in first.stdout
    second = run_sls(deployed_project, workflow_aws, *args)  # unnamed again: a fresh UUID
    assert second.returncode == 0, second.stdout + second.stderr


def test_a_tables_encryption_and_point_in_time_recovery_come_from_the_template(
    workflow_aws: LocalAws,
) -> None:
    name = f"table-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {
            "Table": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": name,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                    "SSESpecification": {"SSEEnabled": True},
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                },
            }
        }
    }
    cloudformation = workflow_aws.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
    dynamodb = workflow_aws.client("dynamodb")
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert table["SSEDescription"]["SSEType"] == "KMS"  # the AWS managed key, aws/dynamodb
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_a_change_set_whose_ssm_parameter_is_missing_is_a_validation_error(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """A template parameter of type `AWS::SSM::Parameter::Value<String>` names a Parameter
    Store parameter whose value CloudFormation fetches when it creates the change set
    (CloudFormation User Guide, "Specify existing resources at runtime with
    CloudFormation-supplied parameter types": the value is the parameter's name, resolved
    from Parameter Store of the stack's account and Region). A name that is not there is
    refused as AWS refuses it, ValidationError "Unable to fetch parameters [NAME] from
    parameter store for this account." (moto answered an HTML 500, which the SDKs print as
    a deserialization error), and no stack is left behind."""
    import boto3
    from botocore.exceptions import ClientError

    missing = f"/{unique_name}/endpoint-name"
    template = {
        "Parameters": {
            "EndpointName": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": missing}
        },
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    }
    cloudformation = boto3.client("cloudformation")
    with pytest.raises(ClientError) as refused:
        cloudformation.create_change_set(
            StackName=unique_name,
            ChangeSetName="first",
            ChangeSetType="CREATE",
            TemplateBody=json.dumps(template),
        )
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "ValidationError"
    assert error["Message"] == (
        f"Unable to fetch parameters [{missing}] from parameter store for this account."
    )
    stacks = cloudformation.list_stacks()["StackSummaries"]
    assert unique_name not in {
        s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"
    }


def test_a_queue_policy_from_the_template_is_the_queues_policy(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """`AWS::SQS::QueuePolicy` applies its PolicyDocument to each queue of `Queues` (their
    URLs; CloudFormation User Guide, AWS::SQS::QueuePolicy), as the trigger's dead-letter
    queue needs (serverless.yml); moto skipped the resource type, leaving no policy."""
    import boto3

    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": {"Fn::GetAtt": ["Queue", "Arn"]},
            }
        ],
    }
    template = {
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": unique_name}},
            "QueuePolicy": {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {"Queues": [{"Ref": "Queue"}], "PolicyDocument": document},
            },
        }
    }
    boto3.client("cloudformation").create_stack(
        StackName=unique_name, TemplateBody=json.dumps(template)
    )
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=unique_name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy", "QueueArn"])
    policy = json.loads(attributes["Attributes"]["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Resource"] == attributes["Attributes"]["QueueArn"]


def test_a_stack_made_by_change_sets_with_an_export_is_removed_and_made_again(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """As osls does: a stack created, then updated by a change set whose template exports
    an output (osls exports its deployment bucket's name), is deleted (`sls remove`) and
    created again (`sls deploy` of the same stage). DeleteStack removed the exports by
    name and failed with KeyError (an HTML 500) on one the change set had added."""
    import boto3

    cloudformation = boto3.client("cloudformation")
    first = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    exported = {
        **first,
        "Outputs": {
            "TopicArn": {"Value": {"Ref": "Topic"}, "Export": {"Name": f"{unique_name}-topic"}}
        },
    }
    for _ in range(2):
        cloudformation.create_stack(StackName=unique_name, TemplateBody=json.dumps(first))
        cloudformation.create_change_set(
            StackName=unique_name,
            ChangeSetName="update",
            ChangeSetType="UPDATE",
            TemplateBody=json.dumps(exported),
        )
        cloudformation.execute_change_set(StackName=unique_name, ChangeSetName="update")
        names = {e["Name"] for e in cloudformation.list_exports()["Exports"]}
        assert f"{unique_name}-topic" in names
        cloudformation.delete_stack(StackName=unique_name)
        names = {e["Name"] for e in cloudformation.list_exports()["Exports"]}
        assert f"{unique_name}-topic" not in names
        live = [
            s
            for s in cloudformation.list_stacks()["StackSummaries"]
            if s["StackName"] == unique_name and s["StackStatus"] != "DELETE_COMPLETE"
        ]
        assert live == []


def test_a_change_set_creating_a_table_that_exists_fails_the_stack_not_the_request(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """`sls deploy` of a stage after `sls remove`: the decisions table was retained
    (DeletionPolicy Retain) and the new stack creates it again by name. CloudFormation
    accepts ExecuteChangeSet, the table's creation fails (CREATE_FAILED: it already
    exists) and the stack rolls back (UPDATE_ROLLBACK_COMPLETE), the table and its items
    untouched (CloudFormation User Guide, "Stack status codes" and DeletionPolicy). moto
    answered ExecuteChangeSet with an HTML 500 instead."""
    import boto3

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=unique_name,
        AttributeDefinitions=[{"AttributeName": "image", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=unique_name, Item={"image": {"S": "s3://b/answered.png"}})
    cloudformation = boto3.client("cloudformation")
    first = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    cloudformation.create_stack(StackName=unique_name, TemplateBody=json.dumps(first))
    table = {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "Properties": {
            "TableName": unique_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "image", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "image", "KeyType": "HASH"}],
        },
    }
    second = {
        "Resources": {**first["Resources"], "Table": table, "Other": {"Type": "AWS::SNS::Topic"}}
    }
    cloudformation.create_change_set(
        StackName=unique_name,
        ChangeSetName="update",
        ChangeSetType="UPDATE",
        TemplateBody=json.dumps(second),
    )
    cloudformation.execute_change_set(StackName=unique_name, ChangeSetName="update")

    [stack] = cloudformation.describe_stacks(StackName=unique_name)["Stacks"]
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    events = cloudformation.describe_stack_events(StackName=unique_name)["StackEvents"]
    [failed] = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED"]
    assert failed["LogicalResourceId"] == "Table"
    assert "already exists" in failed["ResourceStatusReason"]
    resources = cloudformation.list_stack_resources(StackName=unique_name)["StackResourceSummaries"]
    assert {r["LogicalResourceId"] for r in resources} == {"Topic"}
    assert dynamodb.scan(TableName=unique_name)["Count"] == 1
